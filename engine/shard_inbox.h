// The one place where a shard meets other threads: the feeder pushes transactions and
// control flags here, and wakes the shard through an eventfd its ring is reading. The
// lock is taken once per batch on each side, never per message on the shard's hot path.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "engine/destination.h"
#include "smtp/transaction.h"

namespace ringmail::engine {

struct ShardJob {
  Destination destination;
  std::string destination_key;  // destination.key(), computed once by the feeder
  smtp::Transaction transaction;
};

class ShardInbox {
 public:
  ShardInbox();  // throws std::system_error when no eventfd can be made (start-up only)
  ~ShardInbox();
  ShardInbox(const ShardInbox&) = delete;
  ShardInbox& operator=(const ShardInbox&) = delete;

  // ---- Other threads
  void push(std::vector<ShardJob>&& jobs);
  void close();          // no more jobs will come
  void request_drain();  // stop: drop queued work, finish what is in flight

  // ---- The shard thread
  int eventfd() const { return eventfd_; }
  // Moves every job pushed so far into `out` (appending). Returns true when the inbox
  // was closed at that moment, so no job can follow the ones taken.
  bool take(std::vector<ShardJob>& out);
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  bool drain_requested() const { return drain_.load(std::memory_order_acquire); }

  // Transactions handed to the shard and not yet finished: the feeder waits while this is
  // at the shard's capacity, which bounds memory on huge campaigns.
  std::atomic<uint64_t> outstanding{0};

 private:
  void wake_locked();

  int eventfd_ = -1;
  std::mutex mutex_;
  std::vector<ShardJob> jobs_;
  bool wake_pending_ = false;
  std::atomic<bool> closed_{false};
  std::atomic<bool> drain_{false};
};

}  // namespace ringmail::engine

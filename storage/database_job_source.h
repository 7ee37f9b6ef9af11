// The engine's JobSource during `run`: due recipients claimed from the database in
// batches through the StorageThread (so SQLite stays off the feeder and the shards
// alike), the next batch requested while the current one is handed out. A following
// source (`run` as a service) waits for work to become due instead of ending, so one
// engine, its pools and connections serve the whole life of the process.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <string>

#include "engine/seams.h"
#include "storage/database_change_watch.h"
#include "storage/storage_thread.h"

namespace ringmail::storage {

class DatabaseJobSource final : public engine::JobSource {
 public:
  // `storage` must outlive this source. With `follow_poll` the source follows the
  // database: when nothing is due, wait_for_more() sleeps until something is (it looks
  // at the next due time at least that often, so work enqueued by another process is
  // seen), and next() claims again.
  // Without it the source ends when nothing is due (`--until-done`, `send`).
  // Following, `database_path` (when given) is also watched (DatabaseChangeWatch): a
  // commit by another process ends the wait at once, the poll staying as the fallback.
  DatabaseJobSource(StorageThread& storage, size_t claim_batch,
                    std::optional<std::chrono::milliseconds> follow_poll = std::nullopt,
                    const std::string& database_path = {});

  // Feeder thread only. nullopt when nothing is due now, or the storage has failed, or
  // stop() was called.
  std::optional<engine::DeliveryItem> next() override;
  // Feeder thread only: following, waits as said above; false once stopped or failed.
  bool wait_for_more() override;
  void interrupt() override { stop(); }

  // Any thread: the next call to next() ends the source, and a wait ends now.
  void stop();
  // After the engine has finished: gives every claimed recipient never handed out back
  // to the queue (at a drain, or the prefetched batch).
  void release_unsent();

  uint64_t handed_out() const { return handed_out_.load(std::memory_order_relaxed); }
  bool exhausted() const { return exhausted_.load(std::memory_order_relaxed); }

 private:
  using ClaimFuture = std::future<std::expected<std::vector<ClaimedItem>, StorageError>>;

  StorageThread& storage_;
  const size_t claim_batch_;
  const std::optional<std::chrono::milliseconds> follow_poll_;
  std::mutex wait_mutex_;
  std::condition_variable wake_;  // stop() ends a wait_for_more()
  std::optional<DatabaseChangeWatch> watch_;  // set once, in the constructor
  std::vector<ClaimedItem> current_;
  size_t next_index_ = 0;
  std::optional<ClaimFuture> prefetch_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> exhausted_{false};
  std::atomic<uint64_t> handed_out_{0};
};

}  // namespace ringmail::storage

// The storage thread's senders and bodies of claimed messages, bounded by bytes. Claimed
// recipients of one message share one body pointer (the engine's batcher groups identical
// pointers into one SMTP transaction), yet a `run` that serves receipts all day must not
// keep every message it ever sent: the least recently claimed go first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "smtp/transaction.h"

namespace ringmail::storage {

class MessageCache {
 public:
  struct Message {
    std::shared_ptr<const std::string> sender;
    smtp::EncodedBody body;
  };

  // Holds at most `max_bytes` of senders and bodies, except that the message inserted last
  // stays whatever its size. An evicted body lives on in the engine as long as recipients
  // there hold it; a later claim of the same message reads it again.
  explicit MessageCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  // The cached message, now the most recently used; null when not cached.
  const Message* find(int64_t id);
  // Caches `message` as the most recently used and evicts the least recently used ones
  // beyond the bound. `id` must not be cached.
  const Message& insert(int64_t id, Message message);

  size_t bytes() const { return bytes_; }
  size_t size() const { return index_.size(); }

 private:
  struct Slot {
    int64_t id;
    Message message;
    size_t bytes;
  };
  static size_t bytes_of(const Message& m);

  size_t max_bytes_;
  size_t bytes_ = 0;
  std::list<Slot> by_use_;  // most recently used first
  std::unordered_map<int64_t, std::list<Slot>::iterator> index_;
};

}  // namespace ringmail::storage

// LRU by bytes: a list in order of use and a map from message id into it.
#include "storage/message_cache.h"

#include <utility>

namespace ringmail::storage {

size_t MessageCache::bytes_of(const Message& m) {
  // Counts what the two strings hold plus a rough fixed cost of the entry, so a run of
  // tiny messages is bounded too.
  constexpr size_t kEntryOverhead = 128;
  return kEntryOverhead + (m.sender ? m.sender->size() : 0) + (m.body ? m.body->size() : 0);
}

const MessageCache::Message* MessageCache::find(int64_t id) {
  auto it = index_.find(id);
  if (it == index_.end()) return nullptr;
  by_use_.splice(by_use_.begin(), by_use_, it->second);
  return &it->second->message;
}

const MessageCache::Message& MessageCache::insert(int64_t id, Message message) {
  const size_t size = bytes_of(message);
  by_use_.push_front(Slot{id, std::move(message), size});
  index_[id] = by_use_.begin();
  bytes_ += size;
  while (bytes_ > max_bytes_ && by_use_.size() > 1) {
    const Slot& oldest = by_use_.back();
    bytes_ -= oldest.bytes;
    index_.erase(oldest.id);
    by_use_.pop_back();
  }
  return by_use_.front().message;
}

}  // namespace ringmail::storage

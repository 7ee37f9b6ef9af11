#include "engine/transaction_batcher.h"

namespace ringmail::engine {

size_t TransactionBatcher::KeyHash::operator()(const Key& k) const {
  size_t h = std::hash<std::string>{}(k.destination_key);
  h ^= std::hash<std::string>{}(k.sender) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= std::hash<const void*>{}(k.body) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}

TransactionBatcher::TransactionBatcher(unsigned max_recipients, Emit emit, size_t max_open)
    : max_recipients_(max_recipients == 0 ? 1 : max_recipients),
      emit_(std::move(emit)),
      max_open_(max_open) {}

void TransactionBatcher::add(DeliveryItem&& item, const Destination& destination,
                             const std::string& destination_key) {
  Key key{destination_key, item.sender, item.body.get()};
  auto it = open_.find(key);
  if (it == open_.end()) {
    if (open_.size() >= max_open_) flush();
    ShardJob job;
    job.destination = destination;
    job.destination_key = destination_key;
    job.transaction.id = next_id_++;
    job.transaction.sender = std::move(item.sender);
    job.transaction.body = std::move(item.body);
    job.transaction.urgent = item.urgent;  // one message, one urgency: it is in the key's body
    // Room for a few recipients, not the limit: personalised mail has one each.
    const size_t expected = std::min<size_t>(max_recipients_, 8);
    job.transaction.recipients.reserve(expected);
    job.transaction.recipient_tags.reserve(expected);
    it = open_.emplace(std::move(key), std::move(job)).first;
  }
  ShardJob& job = it->second;
  job.transaction.recipients.push_back(std::move(item.recipient));
  job.transaction.recipient_tags.push_back(item.tag);
  // Urgent work is not held back to fill its transaction: the batcher emits the rest only
  // when the feeder runs dry, which behind a campaign is when the campaign is claimed.
  if (job.transaction.urgent || job.transaction.recipients.size() >= max_recipients_) {
    emit_(std::move(job));
    open_.erase(it);
  }
}

void TransactionBatcher::flush() {
  for (auto& [key, job] : open_) emit_(std::move(job));
  open_.clear();
}

}  // namespace ringmail::engine

#include "storage/database_job_source.h"

namespace ringmail::storage {

DatabaseJobSource::DatabaseJobSource(StorageThread& storage, size_t claim_batch)
    : storage_(storage), claim_batch_(claim_batch) {}

std::optional<engine::DeliveryItem> DatabaseJobSource::next() {
  if (exhausted_.load(std::memory_order_relaxed)) return std::nullopt;
  if (stopped_.load(std::memory_order_relaxed) || storage_.failure()) {
    exhausted_.store(true, std::memory_order_relaxed);
    return std::nullopt;
  }
  if (next_index_ >= current_.size()) {
    if (!prefetch_) prefetch_ = storage_.claim(claim_batch_);
    auto batch = prefetch_->get();
    prefetch_.reset();
    current_.clear();
    next_index_ = 0;
    if (!batch || batch->empty()) {
      exhausted_.store(true, std::memory_order_relaxed);
      return std::nullopt;
    }
    current_ = std::move(*batch);
    // A full batch suggests more is due: ask for the next one now, so the feeder rarely
    // waits for a commit.
    if (current_.size() >= claim_batch_) prefetch_ = storage_.claim(claim_batch_);
  }
  ClaimedItem& c = current_[next_index_++];
  handed_out_.fetch_add(1, std::memory_order_relaxed);
  return engine::DeliveryItem{*c.sender, std::move(c.address), std::move(c.body),
                              static_cast<uint64_t>(c.recipient_id)};
}

void DatabaseJobSource::release_unsent() {
  std::vector<int64_t> ids;
  for (size_t i = next_index_; i < current_.size(); ++i) ids.push_back(current_[i].recipient_id);
  current_.clear();
  next_index_ = 0;
  if (prefetch_) {
    auto batch = prefetch_->get();
    prefetch_.reset();
    if (batch)
      for (auto& c : *batch) ids.push_back(c.recipient_id);
  }
  storage_.release(std::move(ids));
}

}  // namespace ringmail::storage

#include "storage/database_job_source.h"

#include <algorithm>

namespace ringmail::storage {

DatabaseJobSource::DatabaseJobSource(StorageThread& storage, size_t claim_batch,
                                     std::optional<std::chrono::milliseconds> follow_poll,
                                     const std::string& database_path)
    : storage_(storage),
      claim_batch_(claim_batch),
      follow_poll_(follow_poll),
      watch_(follow_poll && !database_path.empty() ? DatabaseChangeWatch::open(database_path)
                                                   : std::nullopt) {}

void DatabaseJobSource::stop() {
  {
    std::lock_guard lock(wait_mutex_);
    stopped_.store(true, std::memory_order_relaxed);
  }
  wake_.notify_all();
  if (watch_) watch_->wake();
}

bool DatabaseJobSource::wait_for_more() {
  // Waits until the next retry or scheduled campaign is due, at most the poll interval
  // at a time (or until the change watch sees another process commit), and claims again only
  // once something is due: an idle service asks a read-only question every poll rather
  // than taking the write lock for a claim that finds nothing. The first wait is at
  // least a few milliseconds, so a due time that a claim somehow did not take cannot
  // make the feeder spin.
  bool changed = false;  // the watch saw a write: look again soon even if nothing is due
  for (bool first = true;; first = false) {
    if (!follow_poll_ || stopped_.load(std::memory_order_relaxed) || storage_.failure()) {
      exhausted_.store(true, std::memory_order_relaxed);
      return false;
    }
    auto next_due = storage_.next_due_at();
    if (!next_due) {
      exhausted_.store(true, std::memory_order_relaxed);
      return false;  // the storage thread has failed; the run reports it
    }
    const int64_t now_ms = unix_now_ms();
    if (!first && *next_due && **next_due <= now_ms) {
      exhausted_.store(false, std::memory_order_relaxed);
      return true;
    }
    std::chrono::milliseconds wait = *follow_poll_;
    if (*next_due) wait = std::min(wait, std::chrono::milliseconds(**next_due - now_ms));
    // A write seen but nothing due yet: the writer may not have published its commit (the
    // -shm index is updated after the last WAL write); one more look shortly.
    if (changed) wait = std::min(wait, std::chrono::milliseconds(20));
    wait = std::max(wait, std::chrono::milliseconds(5));
    if (watch_) {
      // A write to the WAL by anyone (our own storage thread's outcome commits too) ends
      // the wait; the loop then asks the due time again, a read.
      changed = watch_->wait(wait);
      continue;
    }
    std::unique_lock lock(wait_mutex_);
    wake_.wait_for(lock, wait, [&] { return stopped_.load(std::memory_order_relaxed); });
  }
}

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
      // Following, nothing due is not the end: wait_for_more() decides.
      if (!follow_poll_ || !batch) exhausted_.store(true, std::memory_order_relaxed);
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
                              static_cast<uint64_t>(c.recipient_id), c.urgent};
}

void DatabaseJobSource::release_unsent() {
  std::vector<int64_t> ids;
  std::vector<int64_t> urgent;  // listed as urgent again
  auto give_back = [&](const ClaimedItem& c) {
    ids.push_back(c.recipient_id);
    if (c.urgent) urgent.push_back(c.recipient_id);
  };
  for (size_t i = next_index_; i < current_.size(); ++i) give_back(current_[i]);
  current_.clear();
  next_index_ = 0;
  if (prefetch_) {
    auto batch = prefetch_->get();
    prefetch_.reset();
    if (batch)
      for (auto& c : *batch) give_back(c);
  }
  storage_.release(std::move(ids), std::move(urgent));
}

}  // namespace ringmail::storage

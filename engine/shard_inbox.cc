#include "engine/shard_inbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace ringmail::engine {

ShardInbox::ShardInbox() {
  eventfd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (eventfd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

ShardInbox::~ShardInbox() { ::close(eventfd_); }

void ShardInbox::wake_locked() {
  // One wake per batch the shard has not yet collected: the shard clears the flag when it
  // takes the jobs, so a busy feeder does not write the eventfd for every push.
  if (wake_pending_) return;
  wake_pending_ = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(eventfd_, &one, sizeof one);
}

void ShardInbox::push(std::vector<ShardJob>&& jobs) {
  outstanding.fetch_add(jobs.size(), std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  if (jobs_.empty()) {
    jobs_ = std::move(jobs);
  } else {
    for (auto& job : jobs) jobs_.push_back(std::move(job));
  }
  wake_locked();
}

void ShardInbox::close() {
  std::lock_guard lock(mutex_);
  closed_.store(true, std::memory_order_release);
  // Always write: a pending wake may already have been consumed by a shard that read
  // "not closed" just before this, and it must hear about the close.
  wake_pending_ = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(eventfd_, &one, sizeof one);
}

void ShardInbox::request_drain() {
  std::lock_guard lock(mutex_);
  drain_.store(true, std::memory_order_release);
  wake_locked();
}

bool ShardInbox::take(std::vector<ShardJob>& out) {
  std::lock_guard lock(mutex_);
  wake_pending_ = false;
  if (out.empty()) {
    std::swap(out, jobs_);
  } else {
    for (auto& job : jobs_) out.push_back(std::move(job));
    jobs_.clear();
  }
  return closed_.load(std::memory_order_relaxed);
}

}  // namespace ringmail::engine

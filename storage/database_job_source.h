// The engine's JobSource during `run`: due recipients claimed from the database in
// batches through the StorageThread (so SQLite stays off the feeder and the shards
// alike), the next batch requested while the current one is handed out.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <future>
#include <optional>

#include "engine/seams.h"
#include "storage/storage_thread.h"

namespace ringmail::storage {

class DatabaseJobSource final : public engine::JobSource {
 public:
  // `storage` must outlive this source.
  DatabaseJobSource(StorageThread& storage, size_t claim_batch);

  // Feeder thread only. nullopt when nothing is due now, or the storage has failed, or
  // stop() was called.
  std::optional<engine::DeliveryItem> next() override;

  // Any thread: the next call to next() ends the source.
  void stop() { stopped_.store(true, std::memory_order_relaxed); }
  // After the engine has finished: gives every claimed recipient never handed out back
  // to the queue (at a drain, or the prefetched batch).
  void release_unsent();

  uint64_t handed_out() const { return handed_out_.load(std::memory_order_relaxed); }
  bool exhausted() const { return exhausted_.load(std::memory_order_relaxed); }

 private:
  using ClaimFuture = std::future<std::expected<std::vector<ClaimedItem>, StorageError>>;

  StorageThread& storage_;
  const size_t claim_batch_;
  std::vector<ClaimedItem> current_;
  size_t next_index_ = 0;
  std::optional<ClaimFuture> prefetch_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> exhausted_{false};
  std::atomic<uint64_t> handed_out_{0};
};

}  // namespace ringmail::storage

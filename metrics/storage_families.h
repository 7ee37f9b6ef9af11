// The storage layer's metric families for a scrape of `ringmail run`: outcomes committed to
// the queue, attempts and latency of delivered recipients and the writer's commits (all
// from StorageThread::metrics()), and the queue's depth by state (counted on a read-only
// connection of its own at scrape time, cached). metrics/README.md lists them.
#pragma once

#include <prometheus/metric_family.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "metrics/delivery_collector.h"
#include "storage/queue_store.h"
#include "storage/storage_metrics.h"
#include "storage/storage_thread.h"

namespace ringmail::metrics {

// Recipients per state, indexed by storage::RecipientState.
using QueueDepth = std::array<uint64_t, std::size(storage::kAllStates)>;

// What one scrape reads from the storage layer.
struct StorageSample {
  storage::StorageMetrics committed;
  std::optional<QueueDepth> queue_depth;  // nullopt: unreadable now; that family is left out
};

// The families of one sample. Pure: the unit test feeds it a sample and reads the text.
std::vector<prometheus::MetricFamily> storage_families(const StorageSample& sample);

// Counts the queue's recipients by state (QueueStore::state_counts: a walk of the state
// index and of the pending rows' ranges) on its own read-only connection, opened at the
// first read (in WAL mode a reader never blocks the writer, and the storage thread does no
// work for it). It reads every row's index entry, ~0.1 s of CPU per million rows, so a
// count is reused for at least `min_reuse`, and for at least `reuse_factor` times as long
// as it took: scans then take at most 1/reuse_factor of a core however large the table
// grows, the gauge lagging more.
// Thread-safe (concurrent scrapes wait for one count).
class QueueDepthReader {
 public:
  using Clock = std::chrono::steady_clock;
  explicit QueueDepthReader(storage::StorageOptions options,
                            Clock::duration min_reuse = std::chrono::seconds(5),
                            double reuse_factor = 50);
  std::optional<QueueDepth> read();

 private:
  const storage::StorageOptions options_;
  const Clock::duration min_reuse_;
  const double reuse_factor_;
  std::mutex mutex_;  // guards everything below
  std::optional<storage::QueueStore> store_;
  std::optional<QueueDepth> last_;
  Clock::time_point reuse_until_{};
};

// The storage layer's FamilyProvider for RingmailCollector: samples `thread`'s metrics and
// the depth of the queue at `options.path`. `thread` must outlive the exporter serving it.
FamilyProvider storage_provider(const storage::StorageThread& thread,
                                const storage::StorageOptions& options);

}  // namespace ringmail::metrics

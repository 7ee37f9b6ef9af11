#include "metrics/storage_families.h"

#include <limits>
#include <memory>
#include <string>
#include <utility>

namespace ringmail::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using storage::RecipientState;

template <const auto& Bounds>
MetricFamily histogram_family(std::string name, std::string help,
                              const storage::FixedHistogram<Bounds>& h) {
  MetricFamily f = family(std::move(name), std::move(help), MetricType::Histogram);
  ClientMetric m;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < Bounds.size(); ++i) {
    cumulative += h.buckets[i];
    m.histogram.bucket.push_back({cumulative, Bounds[i]});
  }
  cumulative += h.buckets.back();
  m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = h.sum;
  f.metric.push_back(std::move(m));
  return f;
}

void add_state_sample(MetricFamily& f, RecipientState state, uint64_t value) {
  add_sample(f, static_cast<double>(value), {{"state", std::string(storage::to_string(state))}});
}

}  // namespace

std::vector<MetricFamily> storage_families(const StorageSample& sample) {
  const storage::StorageMetrics& c = sample.committed;
  std::vector<MetricFamily> out;

  MetricFamily outcomes = family(
      "ringmail_queue_outcomes_total",
      "Recipient outcomes committed to the queue database, by the state they left the "
      "recipient in (queued: not attempted, at a drain or parked because its destination had "
      "a backlog); suppressed also counts queued recipients suppressed at the start of the run",
      MetricType::Counter);
  for (RecipientState s :
       {RecipientState::kDelivered, RecipientState::kDeferred, RecipientState::kBounced,
        RecipientState::kExpired, RecipientState::kSuppressed, RecipientState::kQueued})
    add_state_sample(outcomes, s, c.outcome(s));
  out.push_back(std::move(outcomes));

  out.push_back(histogram_family("ringmail_delivery_attempts",
                                 "Attempts each delivered recipient took, the delivering one "
                                 "included",
                                 c.delivery_attempts));
  out.push_back(histogram_family(
      "ringmail_delivery_latency_seconds",
      "Time from a recipient's first due time (its enqueue, or the campaign's send_at when "
      "later) to the commit recording its delivery",
      c.delivery_latency));
  out.push_back(histogram_family(
      "ringmail_storage_commit_duration_seconds",
      "Time of each grouped write transaction of the storage thread, BEGIN to COMMIT "
      "(its outcomes, claims and releases; with synchronous=full the fsync)",
      c.commit_duration));
  out.push_back(counter_family(
      "ringmail_storage_lock_waits_total",
      "Busy timeouts (10 s each) the storage thread waited out because another process held "
      "the database's write lock (a large enqueue, a purge, a sqlite3 shell); meanwhile "
      "outcomes wait in memory and no work is claimed",
      static_cast<double>(c.lock_waits)));
  out.push_back(counter_family(
      "ringmail_storage_leases_recovered_total",
      "Recipients in flight under a run of this host that died (kill -9 of a sibling run or "
      "send), queued again by this run's check every minute",
      static_cast<double>(c.leases_recovered)));
  out.push_back(counter_family(
      "ringmail_storage_purged_total",
      "Recipients in a final state (delivered, bounced, expired, suppressed) removed by the "
      "service's retention (storage.retention) with their attempt log",
      static_cast<double>(c.purged)));
  out.push_back(histogram_family("ringmail_storage_commit_batch_size",
                                 "Recipients whose state each grouped write transaction "
                                 "changes (outcomes, claims, releases)",
                                 c.commit_batch_size));

  if (sample.queue_depth) {
    MetricFamily depth = family("ringmail_queue_recipients",
                                "Recipients in the queue database by state, counted at "
                                "scrape time (reused for a few seconds)",
                                MetricType::Gauge);
    for (RecipientState s : storage::kAllStates)
      add_state_sample(depth, s, (*sample.queue_depth)[static_cast<size_t>(s)]);
    out.push_back(std::move(depth));
  }
  return out;
}

QueueDepthReader::QueueDepthReader(storage::StorageOptions options, Clock::duration min_reuse,
                                   double reuse_factor)
    : options_(std::move(options)), min_reuse_(min_reuse), reuse_factor_(reuse_factor) {}

std::optional<QueueDepth> QueueDepthReader::read() {
  std::lock_guard lock(mutex_);
  const Clock::time_point began = Clock::now();
  if (last_ && began < reuse_until_) return last_;
  if (!store_) {
    auto opened = storage::QueueStore::open(options_, storage::OpenMode::kReadOnly);
    if (!opened) return std::nullopt;  // tried again at the next scrape
    store_.emplace(std::move(*opened));
  }
  auto counts = store_->state_counts();
  if (!counts) {
    store_.reset();  // reopened at the next scrape
    last_.reset();
    return std::nullopt;
  }
  QueueDepth depth{};
  for (const auto& [state, n] : *counts) depth[static_cast<size_t>(state)] = n;
  const Clock::time_point ended = Clock::now();
  const auto took = std::chrono::duration_cast<Clock::duration>((ended - began) * reuse_factor_);
  reuse_until_ = ended + std::max(min_reuse_, took);
  last_ = depth;
  return last_;
}

FamilyProvider storage_provider(const storage::StorageThread& thread,
                                const storage::StorageOptions& options) {
  auto depth = std::make_shared<QueueDepthReader>(options);
  return [&thread, depth](std::vector<MetricFamily>& out) {
    std::vector<MetricFamily> families =
        storage_families(StorageSample{thread.metrics(), depth->read()});
    out.insert(out.end(), std::make_move_iterator(families.begin()),
               std::make_move_iterator(families.end()));
  };
}

}  // namespace ringmail::metrics

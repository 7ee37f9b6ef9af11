// What the storage thread counts for Prometheus: plain integers and fixed-bucket
// histograms, kept on the storage thread and copied out under its mutex at a scrape.
// metrics/storage_families.h turns a copy into metric families; nothing here knows them.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "storage/recipient_state.h"

namespace ringmail::storage {

// Upper bounds (Prometheus `le`) of each histogram; one more bucket holds the rest (+Inf).
inline constexpr std::array<double, 9> kDeliveryAttemptsBounds = {1, 2, 3, 4, 5, 7, 10, 15, 20};
// 0.1 s .. 5 days (the default retry.max_age): a first-try delivery lands in the first
// buckets, a recipient delivered after days of deferrals in the last ones.
inline constexpr std::array<double, 15> kDeliveryLatencyBounds = {
    0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 10800, 21600, 43200, 86400, 172800, 432000};
inline constexpr std::array<double, 12> kCommitDurationBounds = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
// A commit holds up to commit_batch (2,000) outcomes plus claims and releases.
inline constexpr std::array<double, 11> kCommitBatchBounds = {1,    10,   50,   100,  250,  500,
                                                              1000, 2000, 4000, 8000, 16000};

// A histogram over the fixed `Bounds`: counts per bucket (not cumulative) and their sum.
template <const auto& Bounds>
struct FixedHistogram {
  static constexpr const auto& bounds = Bounds;
  std::array<uint64_t, Bounds.size() + 1> buckets{};  // the last: above every bound
  double sum = 0;

  // `n` observations of the same value (a run of recipients claimed together).
  void observe(double value, uint64_t n = 1) {
    // The first bound >= value: Prometheus buckets are `le` (less than or equal).
    const auto i = std::lower_bound(Bounds.begin(), Bounds.end(), value) - Bounds.begin();
    buckets[static_cast<size_t>(i)] += n;
    sum += value * static_cast<double>(n);
  }
  uint64_t count() const {
    uint64_t n = 0;
    for (uint64_t b : buckets) n += b;
    return n;
  }
  void add(const FixedHistogram& other) {
    for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += other.buckets[i];
    sum += other.sum;
  }
};

struct StorageMetrics {
  // Recipients the storage thread committed into each state by an outcome (indexed by
  // RecipientState), plus those suppressed at the run's start (count_startup_changes).
  // A claim (to in_flight) and a release of unsent claims (to queued) are not outcomes.
  std::array<uint64_t, std::size(kAllStates)> outcomes{};
  // Of each recipient delivered: its attempts, this one included.
  FixedHistogram<kDeliveryAttemptsBounds> delivery_attempts;
  // Of each recipient delivered: seconds from its first_due_at (enqueue, or send_at when
  // later) to the commit recording the delivery.
  FixedHistogram<kDeliveryLatencyBounds> delivery_latency;
  // Each grouped write transaction, BEGIN IMMEDIATE to COMMIT, in seconds.
  FixedHistogram<kCommitDurationBounds> commit_duration;
  // Each grouped write transaction: recipients whose state it changes (outcomes, claims,
  // releases).
  FixedHistogram<kCommitBatchBounds> commit_batch_size;
  // Busy timeouts waited out because another process held the write lock, and recipients
  // of dead runs of this host taken back while this run ran (StorageStats has the same).
  uint64_t lock_waits = 0;
  uint64_t leases_recovered = 0;
  // Recipients in a final state removed by the service's retention (storage.retention).
  uint64_t purged = 0;

  uint64_t outcome(RecipientState state) const { return outcomes[static_cast<size_t>(state)]; }
  void add(const StorageMetrics& other) {
    for (size_t i = 0; i < outcomes.size(); ++i) outcomes[i] += other.outcomes[i];
    delivery_attempts.add(other.delivery_attempts);
    delivery_latency.add(other.delivery_latency);
    commit_duration.add(other.commit_duration);
    commit_batch_size.add(other.commit_batch_size);
    lock_waits += other.lock_waits;
    leases_recovered += other.leases_recovered;
    purged += other.purged;
  }
};

}  // namespace ringmail::storage

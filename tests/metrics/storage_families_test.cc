// The storage layer's families for a known sample, as the text exposition a scrape returns:
// names, types, every label value from the first scrape, cumulative histogram buckets.
#include "metrics/storage_families.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <set>
#include <sstream>

namespace ringmail::metrics {
namespace {

using storage::RecipientState;

std::string exposition(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

StorageSample known_sample() {
  StorageSample s;
  storage::StorageMetrics& m = s.committed;
  m.outcomes[size_t(RecipientState::kDelivered)] = 90;
  m.outcomes[size_t(RecipientState::kDeferred)] = 7;
  m.outcomes[size_t(RecipientState::kBounced)] = 3;
  m.outcomes[size_t(RecipientState::kExpired)] = 2;
  m.outcomes[size_t(RecipientState::kSuppressed)] = 4;
  m.outcomes[size_t(RecipientState::kQueued)] = 1;
  m.delivery_attempts.observe(1, 80);
  m.delivery_attempts.observe(2, 8);
  m.delivery_attempts.observe(6, 1);      // le 7
  m.delivery_attempts.observe(30, 1);     // +Inf
  m.delivery_latency.observe(0.05, 70);   // le 0.1
  m.delivery_latency.observe(120, 18);    // le 300
  m.delivery_latency.observe(86400, 1);   // le 86400 (a bound is inclusive)
  m.delivery_latency.observe(500000, 1);  // past 5 days: +Inf
  m.commit_duration.observe(0.0003, 5);
  m.commit_duration.observe(0.004, 2);
  m.commit_batch_size.observe(1000, 3);
  m.commit_batch_size.observe(3000, 4);
  m.lock_waits = 2;
  m.leases_recovered = 600;
  m.purged = 12345;
  QueueDepth depth{};
  depth[size_t(RecipientState::kQueued)] = 1000;
  depth[size_t(RecipientState::kInFlight)] = 200;
  depth[size_t(RecipientState::kDelivered)] = 90;
  s.queue_depth = depth;
  return s;
}

TEST(metrics_storage_families, ExpositionOfAKnownSample) {
  const std::string text = exposition(storage_families(known_sample()));
  for (const char* line : {
           "# TYPE ringmail_queue_outcomes_total counter",
           "ringmail_queue_outcomes_total{state=\"delivered\"} 90",
           "ringmail_queue_outcomes_total{state=\"deferred\"} 7",
           "ringmail_queue_outcomes_total{state=\"bounced\"} 3",
           "ringmail_queue_outcomes_total{state=\"expired\"} 2",
           "ringmail_queue_outcomes_total{state=\"suppressed\"} 4",
           "ringmail_queue_outcomes_total{state=\"queued\"} 1",

           "# TYPE ringmail_storage_lock_waits_total counter",
           "ringmail_storage_lock_waits_total 2",
           "# TYPE ringmail_storage_leases_recovered_total counter",
           "ringmail_storage_leases_recovered_total 600",
           "# TYPE ringmail_storage_purged_total counter",
           "ringmail_storage_purged_total 12345",

           "# TYPE ringmail_delivery_attempts histogram",
           "ringmail_delivery_attempts_bucket{le=\"1\"} 80",
           "ringmail_delivery_attempts_bucket{le=\"2\"} 88",
           "ringmail_delivery_attempts_bucket{le=\"5\"} 88",
           "ringmail_delivery_attempts_bucket{le=\"7\"} 89",
           "ringmail_delivery_attempts_bucket{le=\"20\"} 89",
           "ringmail_delivery_attempts_bucket{le=\"+Inf\"} 90",
           "ringmail_delivery_attempts_count 90",
           "ringmail_delivery_attempts_sum 132",  // 80 + 16 + 6 + 30

           "# TYPE ringmail_delivery_latency_seconds histogram",
           "ringmail_delivery_latency_seconds_bucket{le=\"0.1\"} 70",
           "ringmail_delivery_latency_seconds_bucket{le=\"60\"} 70",
           "ringmail_delivery_latency_seconds_bucket{le=\"300\"} 88",
           "ringmail_delivery_latency_seconds_bucket{le=\"86400\"} 89",
           "ringmail_delivery_latency_seconds_bucket{le=\"432000\"} 89",
           "ringmail_delivery_latency_seconds_bucket{le=\"+Inf\"} 90",
           "ringmail_delivery_latency_seconds_count 90",

           "# TYPE ringmail_storage_commit_duration_seconds histogram",
           "ringmail_storage_commit_duration_seconds_bucket{le=\"0.0005\"} 5",
           "ringmail_storage_commit_duration_seconds_bucket{le=\"0.005\"} 7",
           "ringmail_storage_commit_duration_seconds_bucket{le=\"+Inf\"} 7",
           "ringmail_storage_commit_duration_seconds_count 7",

           "# TYPE ringmail_storage_commit_batch_size histogram",
           "ringmail_storage_commit_batch_size_bucket{le=\"500\"} 0",
           "ringmail_storage_commit_batch_size_bucket{le=\"1000\"} 3",
           "ringmail_storage_commit_batch_size_bucket{le=\"2000\"} 3",
           "ringmail_storage_commit_batch_size_bucket{le=\"4000\"} 7",
           "ringmail_storage_commit_batch_size_count 7",
           "ringmail_storage_commit_batch_size_sum 15000",

           "# TYPE ringmail_queue_recipients gauge",
           "ringmail_queue_recipients{state=\"queued\"} 1000",
           "ringmail_queue_recipients{state=\"in_flight\"} 200",
           "ringmail_queue_recipients{state=\"delivered\"} 90",
           "ringmail_queue_recipients{state=\"deferred\"} 0",
           "ringmail_queue_recipients{state=\"bounced\"} 0",
           "ringmail_queue_recipients{state=\"expired\"} 0",
           "ringmail_queue_recipients{state=\"suppressed\"} 0",
       }) {
    EXPECT_TRUE(has_line(text, line)) << "missing: " << line << "\n" << text;
  }
  // Claims are not outcomes: no in_flight series.
  EXPECT_EQ(text.find("ringmail_queue_outcomes_total{state=\"in_flight\"}"), std::string::npos);
}

TEST(metrics_storage_families, EverySeriesExistsBeforeAnyCommit) {
  const std::string text = exposition(storage_families(StorageSample{{}, QueueDepth{}}));
  EXPECT_TRUE(has_line(text, "ringmail_queue_outcomes_total{state=\"expired\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "ringmail_delivery_attempts_count 0")) << text;
  EXPECT_TRUE(has_line(text, "ringmail_delivery_latency_seconds_bucket{le=\"+Inf\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "ringmail_storage_commit_duration_seconds_count 0")) << text;
  EXPECT_TRUE(has_line(text, "ringmail_queue_recipients{state=\"suppressed\"} 0")) << text;
}

TEST(metrics_storage_families, AnUnreadableQueueLeavesOnlyTheDepthOut) {
  StorageSample s = known_sample();
  s.queue_depth.reset();
  const std::string text = exposition(storage_families(s));
  EXPECT_EQ(text.find("ringmail_queue_recipients"), std::string::npos) << text;
  EXPECT_TRUE(has_line(text, "ringmail_queue_outcomes_total{state=\"delivered\"} 90")) << text;
}

TEST(metrics_storage_families, NamesDoNotClashWithTheEnginesFamilies) {
  std::set<std::string> engine_names;
  for (const auto& f : engine_families(EngineSample{})) engine_names.insert(f.name);
  for (const auto& f : storage_families(known_sample()))
    EXPECT_FALSE(engine_names.count(f.name)) << f.name;
}

}  // namespace
}  // namespace ringmail::metrics

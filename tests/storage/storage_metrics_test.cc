// The storage thread's metrics over a real database: outcomes counted by the state they
// commit, attempts and latency of delivered recipients (carried from the claim), commit
// duration and batch size, and the queue's depth read at scrape time. The thread is driven
// directly (claims, outcomes, releases) so every number is known exactly.
#include "storage/storage_metrics.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <sstream>

#include "metrics/storage_families.h"
#include "smtp/message_body.h"
#include "storage/storage_thread.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

constexpr int64_t kSecond = 1000;

smtp::Reply reply(int code, smtp::EnhancedCode enhanced, std::string text) {
  smtp::Reply r;
  r.code = code;
  r.enhanced = enhanced;
  r.text = std::move(text);
  return r;
}
const smtp::Reply kOk = reply(250, {2, 0, 0}, "queued");
const smtp::Reply kBusy = reply(451, {4, 3, 0}, "try later");
const smtp::Reply kNoSuchUser = reply(550, {5, 1, 1}, "no such user");
const smtp::Reply kShuttingDown = reply(0, {4, 3, 2}, "shutting down");

// One transaction's outcome: each recipient id with its status and reply.
struct Result {
  int64_t id;
  smtp::RecipientStatus status;
  smtp::Reply reply;
};
smtp::TransactionOutcome outcome(const std::vector<Result>& results, bool not_attempted = false) {
  smtp::TransactionOutcome o;
  o.not_attempted = not_attempted;
  for (const Result& r : results) {
    o.transaction.recipients.push_back("r" + std::to_string(r.id) + "@example.test");
    o.transaction.recipient_tags.push_back(static_cast<uint64_t>(r.id));
    o.recipients.push_back({r.status, r.reply});
  }
  return o;
}

std::vector<int64_t> ids_of(const std::vector<ClaimedItem>& items) {
  std::vector<int64_t> ids;
  for (const ClaimedItem& i : items) ids.push_back(i.recipient_id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

class StorageMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = db_.path();
    schedule_.first_delay = Seconds(0);  // a deferral is due again at once
    schedule_.jitter = 0;
    schedule_.max_age = Seconds(3600);
  }

  // Adds `n` recipients first due at `due_ms` (r<first>@example.test ...); ids follow on.
  // They are enqueued at that time too: max_age and latency count from the enqueue when
  // it is later than the due time.
  void enqueue(size_t n, int64_t due_ms, size_t first = 0) {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteCreate);
    ASSERT_TRUE(store) << store.error().message;
    EnqueueRequest r{"c", "s@ringmail.test", smtp::encode_data_body("Subject: t\r\n\r\nhi\r\n"), 0,
                     std::nullopt};
    auto counts = store->begin_enqueue(r, unix_now_ms());
    ASSERT_TRUE(counts);
    for (size_t i = first; i < first + n; ++i) {
      const std::string a = "r" + std::to_string(i) + "@example.test";
      ASSERT_TRUE(store->add_recipient(*counts, a, "example.test", due_ms, due_ms));
    }
    ASSERT_TRUE(store->finish_enqueue());
  }

  std::unique_ptr<StorageThread> start() {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    EXPECT_TRUE(store);
    auto owner = store->register_run(unix_now_ms());
    EXPECT_TRUE(owner);
    return std::make_unique<StorageThread>(std::move(*store), *owner, options_, schedule_);
  }

  std::vector<ClaimedItem> claim(StorageThread& t, size_t n) {
    auto got = t.claim(n).get();
    EXPECT_TRUE(got) << got.error().message;
    return got ? *got : std::vector<ClaimedItem>{};
  }

  testing::TempDb db_;
  StorageOptions options_;
  RetrySchedule schedule_;
};

TEST_F(StorageMetricsTest, OutcomesAttemptsLatencyAndCommits) {
  const int64_t began_ms = unix_now_ms();
  // Ids 1..8 first due 100 s ago; id 9 due two hours ago (past max_age, so a deferral
  // expires it); id 10 on the suppression list.
  enqueue(8, began_ms - 100 * kSecond);
  enqueue(1, began_ms - 7200 * kSecond, 8);
  enqueue(1, began_ms - 100 * kSecond, 9);
  {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->suppress("r9@example.test", "test", unix_now_ms()));
    auto suppressed = store->apply_suppressions(unix_now_ms());
    ASSERT_TRUE(suppressed);
    ASSERT_EQ(*suppressed, 1u);
  }
  auto thread = start();
  StorageThread& t = *thread;
  t.count_startup_changes(RecipientState::kSuppressed, 1);

  // Claim 1: the expired-to-be id 9 (earliest due) and ids 1..8; id 10 is suppressed.
  const std::vector<int64_t> first = ids_of(claim(t, 100));
  ASSERT_EQ(first, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  t.on_transaction_finished(0, outcome({{1, smtp::RecipientStatus::kDelivered, kOk},
                                        {2, smtp::RecipientStatus::kDelivered, kOk},
                                        {3, smtp::RecipientStatus::kDelivered, kOk},
                                        {4, smtp::RecipientStatus::kDeferred, kBusy},
                                        {5, smtp::RecipientStatus::kBounced, kNoSuchUser},
                                        {9, smtp::RecipientStatus::kDeferred, kBusy}}));
  t.on_transaction_finished(
      0, outcome({{6, smtp::RecipientStatus::kDeferred, kShuttingDown}}, /*not_attempted=*/true));
  t.release({7, 8});
  ASSERT_TRUE(t.flush());

  // Claim 2: id 4 (deferred once, due again at once), 6, 7, 8 (back in the queue).
  const std::vector<int64_t> second = ids_of(claim(t, 100));
  ASSERT_EQ(second, (std::vector<int64_t>{4, 6, 7, 8}));
  t.on_transaction_finished(0, outcome({{4, smtp::RecipientStatus::kDelivered, kOk},
                                        {6, smtp::RecipientStatus::kDelivered, kOk},
                                        {7, smtp::RecipientStatus::kDelivered, kOk},
                                        {8, smtp::RecipientStatus::kDelivered, kOk}}));
  // Outcomes for ids this thread never claimed change nothing and are not observed.
  t.on_transaction_finished(0, outcome({{1, smtp::RecipientStatus::kDelivered, kOk},
                                        {42, smtp::RecipientStatus::kDelivered, kOk}}));
  ASSERT_TRUE(t.flush());
  const int64_t ended_ms = unix_now_ms();

  const StorageMetrics m = t.metrics();
  EXPECT_EQ(m.outcome(RecipientState::kDelivered), 7u);   // 1, 2, 3, then 4, 6, 7, 8
  EXPECT_EQ(m.outcome(RecipientState::kDeferred), 1u);    // 4
  EXPECT_EQ(m.outcome(RecipientState::kBounced), 1u);     // 5
  EXPECT_EQ(m.outcome(RecipientState::kExpired), 1u);     // 9
  EXPECT_EQ(m.outcome(RecipientState::kSuppressed), 1u);  // 10, at start
  EXPECT_EQ(m.outcome(RecipientState::kQueued), 1u);      // 6, not attempted at a drain
  EXPECT_EQ(m.outcome(RecipientState::kInFlight), 0u);

  // Attempts: 1, 2, 3, 6, 7, 8 at their first attempt; 4 at its second.
  EXPECT_EQ(m.delivery_attempts.count(), 7u);
  EXPECT_EQ(m.delivery_attempts.buckets[0], 6u);  // le 1
  EXPECT_EQ(m.delivery_attempts.buckets[1], 1u);  // le 2
  EXPECT_DOUBLE_EQ(m.delivery_attempts.sum, 8.0);

  // Latency: each was first due 100 s before the test began, delivered before it ended.
  EXPECT_EQ(m.delivery_latency.count(), 7u);
  EXPECT_GE(m.delivery_latency.sum, 7 * 100.0 - 0.001);
  EXPECT_LE(m.delivery_latency.sum, 7 * (100.0 + double(ended_ms - began_ms) / 1000.0) + 0.001);
  uint64_t up_to_60s = 0;
  for (size_t i = 0; kDeliveryLatencyBounds[i] <= 60; ++i)
    up_to_60s += m.delivery_latency.buckets[i];
  EXPECT_EQ(up_to_60s, 0u);

  // One observation per commit; each batch counts the state changes it made.
  const StorageStats stats = t.stats();
  EXPECT_EQ(m.commit_duration.count(), stats.commits);
  EXPECT_EQ(m.commit_batch_size.count(), stats.commits);
  EXPECT_GE(m.commit_duration.sum, 0.0);
  // Claims 9 + 4, outcomes 7 + 4 + 2, releases 2.
  EXPECT_DOUBLE_EQ(m.commit_batch_size.sum, 9 + 4 + 7 + 4 + 2 + 2);
  EXPECT_EQ(stats.claimed, 9u + 4u);  // once read after the claims were handed over: 0
}

TEST_F(StorageMetricsTest, ReleasedRecipientsAreForgottenAndAttemptsCarriedPerRun) {
  // Two messages, so a claim has two runs of consecutive ids.
  enqueue(50, unix_now_ms() - 10 * kSecond);
  enqueue(50, unix_now_ms() - 10 * kSecond, 50);
  auto thread = start();
  StorageThread& t = *thread;
  const std::vector<int64_t> ids = ids_of(claim(t, 100));
  ASSERT_EQ(ids.size(), 100u);
  // Ids 1..40 deferred, 41..60 released, 61..100 delivered in two transactions.
  std::vector<Result> deferred, delivered_a, delivered_b;
  for (int64_t id = 1; id <= 40; ++id)
    deferred.push_back({id, smtp::RecipientStatus::kDeferred, kBusy});
  for (int64_t id = 61; id <= 80; ++id)
    delivered_a.push_back({id, smtp::RecipientStatus::kDelivered, kOk});
  for (int64_t id = 81; id <= 100; ++id)
    delivered_b.push_back({id, smtp::RecipientStatus::kDelivered, kOk});
  t.on_transaction_finished(0, outcome(deferred));
  t.on_transaction_finished(0, outcome(delivered_b));
  t.on_transaction_finished(0, outcome(delivered_a));
  std::vector<int64_t> released;
  for (int64_t id = 41; id <= 60; ++id) released.push_back(id);
  t.release(released);
  ASSERT_TRUE(t.flush());

  // Again: 1..40 (one attempt each) and 41..60 (none), all delivered.
  const std::vector<int64_t> again = ids_of(claim(t, 100));
  ASSERT_EQ(again.size(), 60u);
  std::vector<Result> all;
  for (int64_t id : again) all.push_back({id, smtp::RecipientStatus::kDelivered, kOk});
  t.on_transaction_finished(0, outcome(all));
  ASSERT_TRUE(t.flush());

  const StorageMetrics m = t.metrics();
  EXPECT_EQ(m.outcome(RecipientState::kDelivered), 100u);
  EXPECT_EQ(m.outcome(RecipientState::kDeferred), 40u);
  EXPECT_EQ(m.delivery_attempts.buckets[0], 60u);  // first try: 41..100
  EXPECT_EQ(m.delivery_attempts.buckets[1], 40u);  // second: 1..40
  EXPECT_EQ(m.delivery_latency.count(), 100u);
  EXPECT_GE(m.delivery_latency.sum, 100 * 10.0 - 0.001);
}

TEST_F(StorageMetricsTest, QueueDepthAtScrapeTime) {
  enqueue(30, unix_now_ms());
  auto thread = start();
  StorageThread& t = *thread;
  const std::vector<int64_t> ids = ids_of(claim(t, 10));  // 10 in flight
  ASSERT_EQ(ids.size(), 10u);
  std::vector<Result> results;
  for (size_t i = 0; i < 4; ++i)
    results.push_back({ids[i], smtp::RecipientStatus::kDelivered, kOk});
  results.push_back({ids[4], smtp::RecipientStatus::kBounced, kNoSuchUser});
  t.on_transaction_finished(0, outcome(results));
  ASSERT_TRUE(t.flush());

  // Read while the storage thread holds its write connection open: a WAL reader.
  metrics::QueueDepthReader reader(options_, std::chrono::hours(1));
  auto depth = reader.read();
  ASSERT_TRUE(depth);
  EXPECT_EQ((*depth)[size_t(RecipientState::kQueued)], 20u);
  EXPECT_EQ((*depth)[size_t(RecipientState::kInFlight)], 5u);
  EXPECT_EQ((*depth)[size_t(RecipientState::kDelivered)], 4u);
  EXPECT_EQ((*depth)[size_t(RecipientState::kBounced)], 1u);
  EXPECT_EQ((*depth)[size_t(RecipientState::kDeferred)], 0u);

  // Reused until it is due again: five more deliveries are not seen yet.
  results.clear();
  for (size_t i = 5; i < 10; ++i)
    results.push_back({ids[i], smtp::RecipientStatus::kDelivered, kOk});
  t.on_transaction_finished(0, outcome(results));
  ASSERT_TRUE(t.flush());
  EXPECT_EQ((*reader.read())[size_t(RecipientState::kDelivered)], 4u);
  metrics::QueueDepthReader fresh(options_, std::chrono::seconds(0), 0);
  EXPECT_EQ((*fresh.read())[size_t(RecipientState::kDelivered)], 9u);
  EXPECT_EQ((*fresh.read())[size_t(RecipientState::kInFlight)], 0u);

  // The provider as the exporter calls it: the storage thread's numbers and the depth.
  std::vector<prometheus::MetricFamily> families;
  metrics::storage_provider(t, options_)(families);
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, families);
  const std::string s = "\n" + text.str();
  EXPECT_NE(s.find("\nringmail_queue_recipients{state=\"delivered\"} 9\n"), std::string::npos) << s;
  EXPECT_NE(s.find("\nringmail_queue_recipients{state=\"queued\"} 20\n"), std::string::npos) << s;
  EXPECT_NE(s.find("\nringmail_queue_outcomes_total{state=\"delivered\"} 9\n"), std::string::npos);
  EXPECT_NE(s.find("\nringmail_delivery_attempts_count 9\n"), std::string::npos) << s;
}

TEST_F(StorageMetricsTest, QueueDepthOfAMissingDatabaseIsLeftOut) {
  StorageOptions missing;
  missing.path = (db_.dir() / "none.db").string();
  metrics::QueueDepthReader reader(missing);
  EXPECT_FALSE(reader.read());
  EXPECT_FALSE(std::filesystem::exists(missing.path));  // read-only: never created
}

}  // namespace
}  // namespace ringmail::storage

// The service's retention (storage.retention): the storage thread removes, a step at a
// time between its commits, the recipients in a final state last changed before the
// retention, with their attempt log and the bodies of messages left with none, and
// nothing else.
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "smtp/message_body.h"
#include "storage/queue_store.h"
#include "storage/storage_thread.h"
#include "tests/storage/other_connection.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

constexpr int64_t kDayMs = 24 * 3600 * 1000;

class StorageThreadRetention : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = db_.path();
    options_.retention = Seconds(24 * 3600);
    options_.retention_check = Seconds(0.05);  // the first pass at once, steps 50 ms apart
    options_.retention_batch = 7;              // several steps for the rows below
  }

  // A message to `n` recipients <campaign><i>@a.test; returns its id.
  int64_t enqueue(size_t n, const std::string& campaign) {
    return testing::enqueue_db(options_, n, "a.test", campaign, campaign);
  }

  void exec(const std::string& sql) {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    ASSERT_TRUE(store);
    auto ok = store->connection().exec(sql);
    ASSERT_TRUE(ok) << sql << ": " << ok.error().message;
  }

  int64_t query(const std::string& sql) { return testing::query_db(options_, sql); }

  // Runs a storage thread until it has purged `expected` recipients (or `limit` passed);
  // asks for the next due time meanwhile, as a waiting service's feeder does, which is
  // what wakes the thread between commits.
  uint64_t run_until_purged(uint64_t expected,
                            std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    EXPECT_TRUE(store);
    auto owner = store->register_run(unix_now_ms());
    EXPECT_TRUE(owner);
    StorageThread thread(std::move(*store), *owner, options_, schedule_, {},
                         [this](const std::string& line) {
                           std::lock_guard lock(mutex_);
                           warnings_.push_back(line);
                         });
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (thread.metrics().purged < expected && std::chrono::steady_clock::now() < deadline) {
      EXPECT_TRUE(thread.next_due_at());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // A little longer: a pass that went on would remove more than expected.
    for (int i = 0; i < 10; ++i) {
      EXPECT_TRUE(thread.next_due_at());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return thread.metrics().purged;
  }

  testing::TempDb db_;
  StorageOptions options_;
  RetrySchedule schedule_;
  std::mutex mutex_;
  std::vector<std::string> warnings_;
};

TEST_F(StorageThreadRetention, OldFinalRecipientsGoAndNothingElse) {
  const int64_t campaign = enqueue(30, "a");  // ids 1..30
  const int64_t receipts = enqueue(4, "b");   // ids 31..34: all old and final
  enqueue(2, "c");                            // ids 35..36: queued, enqueued now
  const int64_t old = unix_now_ms() - 2 * kDayMs;
  const std::string m = std::to_string(campaign);
  // All enqueued two days ago; a pass stops at the first recipient enqueued after its
  // cut-off (ids grow with the enqueue time).
  exec("UPDATE recipient_rows SET created_at = " + std::to_string(old) + " WHERE id <= 34");
  // Of the campaign: 15 delivered and 3 bounced two days ago (with their attempt log),
  // 4 delivered just now, 4 deferred and 4 queued (as old as the rest).
  exec("UPDATE recipient_rows SET state = 'delivered', updated_at = " + std::to_string(old) +
       " WHERE id BETWEEN 1 AND 15");
  exec("UPDATE recipient_rows SET state = 'bounced', updated_at = " + std::to_string(old) +
       " WHERE id BETWEEN 16 AND 18");
  exec("INSERT INTO attempts(recipient_id, at, result, code, enhanced, text) SELECT id, " +
       std::to_string(old) + ", 'bounced', 550, '5.1.1', 'no such user' FROM recipients "
       "WHERE id BETWEEN 16 AND 18");
  exec("UPDATE recipient_rows SET state = 'delivered' WHERE id BETWEEN 19 AND 22");
  exec("UPDATE recipient_rows SET state = 'deferred', updated_at = " + std::to_string(old) +
       " WHERE id BETWEEN 23 AND 26");
  exec("UPDATE recipient_rows SET updated_at = " + std::to_string(old) +
       " WHERE id BETWEEN 27 AND 30");
  exec("UPDATE recipient_rows SET state = 'delivered', updated_at = " + std::to_string(old) +
       " WHERE message_id = " + std::to_string(receipts));

  EXPECT_EQ(run_until_purged(22), 22u);

  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 14);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'delivered'"), 4);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'deferred'"), 4);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'queued'"), 6);
  EXPECT_EQ(query("SELECT count(*) FROM attempts"), 0);
  // The receipts' message keeps its row (its idempotency key) without its body; the
  // campaign, with recipients left, keeps its body.
  EXPECT_EQ(query("SELECT count(*) FROM messages"), 3);
  EXPECT_EQ(query("SELECT length(body) FROM messages WHERE id = " + std::to_string(receipts)), 0);
  EXPECT_GT(query("SELECT length(body) FROM messages WHERE id = " + m), 0);
  std::lock_guard lock(mutex_);
  ASSERT_FALSE(warnings_.empty());
  EXPECT_NE(warnings_.front().find("retention: removed 22 recipients"), std::string::npos)
      << warnings_.front();
  EXPECT_NE(warnings_.front().find("1 message bodies"), std::string::npos) << warnings_.front();
}

TEST_F(StorageThreadRetention, ZeroKeepsEverything) {
  options_.retention = Seconds(0);
  enqueue(10, "a");
  exec("UPDATE recipient_rows SET state = 'delivered', updated_at = " +
       std::to_string(unix_now_ms() - 400 * kDayMs));
  // Ten passes' worth of time (retention_check is 50 ms).
  EXPECT_EQ(run_until_purged(1, std::chrono::milliseconds(500)), 0u);
  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 10);
}

}  // namespace
}  // namespace ringmail::storage

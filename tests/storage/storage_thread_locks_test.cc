// The storage thread of a long-lived run against other processes on the same database: a
// write lock held past the busy timeout (a large enqueue) is waited out with the pending
// work kept, and the leases of a sibling run that died are taken back while it runs.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <future>
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

class StorageThreadLocks : public ::testing::Test {
 protected:
  void SetUp() override { options_.path = db_.path(); }

  void enqueue(size_t n) { testing::enqueue_db(options_, n); }

  int64_t query(const std::string& sql) { return testing::query_db(options_, sql); }

  // Warnings the thread gives, kept for the test to look at.
  StorageWarningListener collect_warnings() {
    return [this](const std::string& line) {
      std::lock_guard lock(warnings_mutex_);
      warnings_.push_back(line);
    };
  }
  std::vector<std::string> warnings() {
    std::lock_guard lock(warnings_mutex_);
    return warnings_;
  }

  testing::TempDb db_;
  StorageOptions options_;
  RetrySchedule schedule_;
  std::mutex warnings_mutex_;
  std::vector<std::string> warnings_;
};

TEST_F(StorageThreadLocks, AWriteLockHeldPastTheBusyTimeoutIsWaitedOutNotFatal) {
  enqueue(10);
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store);
  sqlite3_busy_timeout(store->connection().raw(), 100);  // many timeouts in a short test
  auto owner = store->register_run(unix_now_ms());
  ASSERT_TRUE(owner);
  StorageThread thread(std::move(*store), *owner, options_, schedule_, {}, collect_warnings());
  auto claimed = thread.claim(10).get();
  ASSERT_TRUE(claimed);
  ASSERT_EQ(claimed->size(), 10u);

  // Another process's long write transaction, as an enqueue of a large file holds it.
  auto other = Connection::open(options_.path, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->begin());
  std::vector<int64_t> ids;
  for (const auto& item : *claimed) ids.push_back(item.recipient_id);
  thread.release(ids);
  auto flushed = std::async(std::launch::async, [&] { return thread.flush(); });
  ASSERT_EQ(flushed.wait_for(std::chrono::milliseconds(600)), std::future_status::timeout);
  EXPECT_FALSE(thread.failure());  // before: the run stopped, its outcomes dropped
  EXPECT_GE(thread.stats().lock_waits, 2u);
  EXPECT_EQ(thread.metrics().lock_waits, thread.stats().lock_waits);  // exported alike
  ASSERT_FALSE(warnings().empty());
  EXPECT_NE(warnings().front().find("write lock"), std::string::npos) << warnings().front();

  ASSERT_TRUE(other->commit());
  ASSERT_EQ(flushed.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(flushed.get());
  EXPECT_FALSE(thread.failure());
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'queued'"), 10);
}

TEST_F(StorageThreadLocks, ADrainStopsWaitingForTheLockAfterOneMoreTimeout) {
  enqueue(4);
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store);
  sqlite3_busy_timeout(store->connection().raw(), 100);
  auto owner = store->register_run(unix_now_ms());
  ASSERT_TRUE(owner);
  StorageThread thread(std::move(*store), *owner, options_, schedule_, {}, collect_warnings());
  auto claimed = thread.claim(4).get();
  ASSERT_TRUE(claimed);
  auto other = Connection::open(options_.path, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->begin());  // held for the whole test
  thread.release({claimed->front().recipient_id});
  auto flushed = std::async(std::launch::async, [&] { return thread.flush(); });
  ASSERT_EQ(flushed.wait_for(std::chrono::milliseconds(400)), std::future_status::timeout);
  thread.begin_drain();  // SIGTERM: stop waiting for a lock that may never be released
  ASSERT_EQ(flushed.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto result = flushed.get();
  ASSERT_FALSE(result);
  EXPECT_TRUE(result.error().locked()) << result.error().message;
  ASSERT_TRUE(thread.failure());
  // No new work once failed: a claim is refused rather than left waiting.
  EXPECT_FALSE(thread.claim(1).get());
  other->rollback();
}

TEST_F(StorageThreadLocks, ARunningServiceTakesBackTheLeasesOfASiblingThatDied) {
  enqueue(10);
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // a pid that no longer runs: the sibling killed with -9
  {
    auto sibling = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    ASSERT_TRUE(sibling);
    auto gone = sibling->register_run(unix_now_ms());
    ASSERT_TRUE(gone);
    ASSERT_TRUE(sibling->connection().begin());
    const int64_t now = unix_now_ms();
    ASSERT_TRUE(sibling->claim(*gone, 6, now, now + 3'600'000));  // an hour's lease
    ASSERT_TRUE(sibling->connection().commit());
    ASSERT_TRUE(sibling->connection().exec("UPDATE runs SET pid = " + std::to_string(child) +
                                           " WHERE owner = " + std::to_string(*gone)));
  }
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store);
  auto owner = store->register_run(unix_now_ms());
  ASSERT_TRUE(owner);
  StorageThread thread(std::move(*store), *owner, options_, schedule_, {}, collect_warnings());
  auto first = thread.claim(100).get();  // the thread's first wake checks for dead runs
  ASSERT_TRUE(first);
  auto second = thread.claim(100).get();
  ASSERT_TRUE(second);
  EXPECT_EQ(first->size() + second->size(), 10u);  // the 4 free ones and the dead run's 6
  EXPECT_EQ(thread.stats().leases_recovered, 6u);
  EXPECT_EQ(thread.metrics().leases_recovered, 6u);
  EXPECT_EQ(query("SELECT count(*) FROM runs"), 1);
  ASSERT_FALSE(warnings().empty());
  EXPECT_NE(warnings().back().find("6 recipients"), std::string::npos) << warnings().back();
}

}  // namespace
}  // namespace ringmail::storage

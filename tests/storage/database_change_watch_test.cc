// A `run` service waiting for work wakes when another process commits to its database:
// the change watch on its own (a write to the WAL file wakes it, other files do not,
// wake() ends a wait) and the following DatabaseJobSource woken by a real enqueue long
// before its poll interval.
#include "storage/database_change_watch.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <future>
#include <thread>

#include "smtp/message_body.h"
#include "storage/database_job_source.h"
#include "storage/queue_store.h"
#include "storage/storage_thread.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

using namespace std::chrono_literals;

void append(const std::string& path) { std::ofstream(path, std::ios::app) << "x"; }

TEST(DatabaseChangeWatch, AWriteToTheWalWakesItAndOtherFilesDoNot) {
  testing::TempDb db;
  auto watch = DatabaseChangeWatch::open(db.path());
  ASSERT_TRUE(watch) << "inotify unavailable";
  EXPECT_FALSE(watch->wait(20ms));  // nothing written
  append((db.dir() / "other.db-wal").string());
  append(db.path());  // the database file itself: a checkpoint, not a commit
  EXPECT_FALSE(watch->wait(50ms));
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    append(db.path() + "-wal");
  });
  EXPECT_TRUE(watch->wait(30s));  // well before: the write wakes it
  writer.join();
  // The write and the writer's close are two events, perhaps read by two waits.
  std::this_thread::sleep_for(50ms);
  for (int i = 0; i < 3 && watch->wait(20ms);) ++i;
  EXPECT_FALSE(watch->wait(20ms));  // every event was consumed
}

TEST(DatabaseChangeWatch, WakeEndsTheWaitAndEveryLaterOne) {
  testing::TempDb db;
  auto watch = DatabaseChangeWatch::open(db.path());
  ASSERT_TRUE(watch);
  std::thread waker([&] {
    std::this_thread::sleep_for(50ms);
    watch->wake();
  });
  const auto began = std::chrono::steady_clock::now();
  EXPECT_FALSE(watch->wait(60s));
  waker.join();
  EXPECT_LT(std::chrono::steady_clock::now() - began, 30s);  // not the timeout
  EXPECT_FALSE(watch->wait(60s));  // stays woken: returns at once
}

TEST(DatabaseChangeWatch, AFollowingSourceSeesAnotherProcesssEnqueueBeforeItsPoll) {
  testing::TempDb db;
  StorageOptions options;
  options.path = db.path();
  auto store = QueueStore::open(options, OpenMode::kReadWriteCreate);
  ASSERT_TRUE(store) << store.error().message;
  auto owner = store->register_run(unix_now_ms());
  ASSERT_TRUE(owner);
  StorageThread storage(std::move(*store), *owner, options, RetrySchedule{});
  // A poll far longer than the test may take: only the watch can end the wait in time.
  DatabaseJobSource source(storage, 100, std::chrono::milliseconds(60'000), db.path());
  EXPECT_FALSE(source.next());  // nothing due yet
  auto woke = std::async(std::launch::async, [&] { return source.wait_for_more(); });
  std::this_thread::sleep_for(100ms);
  {
    auto other = QueueStore::open(options, OpenMode::kReadWriteExisting);  // the enqueue
    ASSERT_TRUE(other);
    EnqueueRequest r{"c", "s@ringmail.test", smtp::encode_data_body("Subject: t\r\n\r\nhi\r\n"), 0,
                     std::nullopt};
    const int64_t now = unix_now_ms();
    auto counts = other->begin_enqueue(r, now);
    ASSERT_TRUE(counts);
    ASSERT_TRUE(other->add_recipient(*counts, "receipt@a.test", "a.test", now, now));
    ASSERT_TRUE(other->finish_enqueue());
  }
  ASSERT_EQ(woke.wait_for(30s), std::future_status::ready) << "not woken by the commit";
  EXPECT_TRUE(woke.get());
  auto item = source.next();
  ASSERT_TRUE(item);
  EXPECT_EQ(item->recipient, "receipt@a.test");
  source.stop();
  source.release_unsent();
}

}  // namespace
}  // namespace ringmail::storage

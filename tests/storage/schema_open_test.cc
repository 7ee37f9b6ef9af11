// Opening a database whose first migration never finished: what it left must not make
// the file look like another program's (the review's disk-full-then-retry case), while a
// real foreign database is still refused untouched.
#include <gtest/gtest.h>

#include "storage/queue_store.h"
#include "storage/schema.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

TEST(storage_schema_open, AnEmptyVersionTableFromAFailedFirstMigrationIsMigrated) {
  testing::TempDb tmp;
  {
    auto db = Connection::open(tmp.path(), OpenMode::kReadWriteCreate);
    ASSERT_TRUE(db) << db.error().message;
    // What a pre-fix binary left when migration 1 failed after creating this table.
    ASSERT_TRUE(db->exec("CREATE TABLE schema_version (version INTEGER NOT NULL)"));
  }
  StorageOptions options;
  options.path = tmp.path();
  auto store = QueueStore::open(options, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store) << store.error().message;
  auto version = schema_version(store->connection());
  ASSERT_TRUE(version);
  EXPECT_EQ(*version, current_schema_version());
}

TEST(storage_schema_open, AnotherProgramsDatabaseIsStillRefused) {
  testing::TempDb tmp;
  {
    auto db = Connection::open(tmp.path(), OpenMode::kReadWriteCreate);
    ASSERT_TRUE(db) << db.error().message;
    ASSERT_TRUE(db->exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"));
  }
  StorageOptions options;
  options.path = tmp.path();
  auto store = QueueStore::open(options, OpenMode::kReadWriteExisting);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message.find("not a ringmail database"), std::string::npos)
      << store.error().message;
}

}  // namespace
}  // namespace ringmail::storage

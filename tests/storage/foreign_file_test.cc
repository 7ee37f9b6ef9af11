// A file ringmail refuses (another program's database, a newer ringmail's, one whose
// schema_version lost its row, not a database at all) is left byte for byte as it was,
// through the opens the commands use: QueueStore::open, creating (enqueue) or not (run,
// status, purge, suppress), and read-only (the metrics' queue depth). The files are made
// in rollback-journal mode, as `sqlite3 other.db "create table foo(x)"` makes them, where
// the switch to WAL would rewrite the header. New and empty files are still created.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "storage/queue_store.h"
#include "storage/schema.h"
#include "tests/storage/other_connection.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

namespace fs = std::filesystem;

constexpr OpenMode kAllModes[] = {OpenMode::kReadWriteCreate, OpenMode::kReadWriteExisting,
                                  OpenMode::kReadOnly};

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

// Where two files' bytes first differ, for a failure message that does not print them.
std::string first_difference(std::string_view before, std::string_view after) {
  if (before == after) return "";
  size_t i = 0;
  while (i < before.size() && i < after.size() && before[i] == after[i]) ++i;
  return "size " + std::to_string(before.size()) + " -> " + std::to_string(after.size()) +
         ", first changed byte at offset " + std::to_string(i);
}

// Runs `sql` on `path` through the SQLite C API: another program, not ringmail.
void sqlite_exec(const std::string& path, const std::string& sql) {
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
  char* msg = nullptr;
  const int rc = sqlite3_exec(raw, sql.c_str(), nullptr, nullptr, &msg);
  EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << (msg ? msg : "");
  sqlite3_free(msg);
  ASSERT_EQ(sqlite3_close(raw), SQLITE_OK);
}

std::string journal_mode(const std::string& path) {
  sqlite3* raw = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  std::string mode;
  if (sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    mode = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(raw);
  return mode;
}

class ForeignFileTest : public ::testing::Test {
 protected:
  std::expected<QueueStore, StorageError> open(OpenMode mode) {
    StorageOptions options;
    options.path = tmp_.path();
    return QueueStore::open(options, mode);
  }

  // Opens the file in `mode`: it is a ringmail database at the current version, in WAL.
  void expect_opens_current_in_wal(OpenMode mode) {
    {
      auto store = open(mode);
      ASSERT_TRUE(store) << store.error().message;
      auto version = schema_version(store->connection());
      ASSERT_TRUE(version);
      EXPECT_EQ(*version, current_schema_version());
    }
    EXPECT_EQ(journal_mode(tmp_.path()), "wal");
  }

  // A ringmail database at the current version, then set back to a rollback journal.
  void make_ringmail_database_without_wal() {
    {
      auto store = open(OpenMode::kReadWriteCreate);
      ASSERT_TRUE(store) << store.error().message;
    }
    sqlite_exec(tmp_.path(), "PRAGMA journal_mode=DELETE");
    ASSERT_EQ(journal_mode(tmp_.path()), "delete");
  }

  // Opens the file in every mode: each is refused with `expected` in its message (the
  // read-only open with `read_only_expected`), and the file is exactly as it was, with no
  // -wal, -shm or -journal left beside it by a write mode.
  void expect_refused_untouched(std::string_view expected, std::string_view read_only_expected,
                                bool corrupt) {
    const std::string before = read_bytes(tmp_.path());
    ASSERT_FALSE(before.empty());
    for (OpenMode mode : kAllModes) {
      SCOPED_TRACE(static_cast<int>(mode));
      auto store = open(mode);
      ASSERT_FALSE(store) << "a refused file was opened";
      const std::string& message = store.error().message;
      EXPECT_NE(message.find(mode == OpenMode::kReadOnly ? read_only_expected : expected),
                std::string::npos)
          << message;
      EXPECT_NE(message.find(tmp_.path()), std::string::npos) << message;
      if (corrupt && mode != OpenMode::kReadOnly) {
        EXPECT_TRUE(store.error().corrupt()) << message;
      }
      EXPECT_EQ(first_difference(before, read_bytes(tmp_.path())), "")
          << "the refused file was written";
      // A read-only connection cannot remove the -wal and -shm that reading a WAL file
      // creates (plain SQLite, and the scrape's reader is long-lived): checked for the
      // commands' opens only, and the read-only open comes last.
      if (mode == OpenMode::kReadOnly) continue;
      for (const char* suffix : {"-wal", "-shm", "-journal"})
        EXPECT_FALSE(fs::exists(tmp_.path() + suffix)) << suffix;
    }
  }

  testing::TempDb tmp_;
};

TEST_F(ForeignFileTest, AnotherProgramsDatabaseIsRefusedByteForByte) {
  sqlite_exec(tmp_.path(), "CREATE TABLE foo (x)");
  ASSERT_EQ(journal_mode(tmp_.path()), "delete");
  expect_refused_untouched("not a ringmail database: it has 1 tables but no schema_version",
                           "schema version 0", true);
}

TEST_F(ForeignFileTest, AnotherProgramsDatabaseWithRowsAndAnIndexIsRefusedByteForByte) {
  sqlite_exec(tmp_.path(),
              "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER);"
              "CREATE INDEX invoices_by_total ON invoices(total);"
              "CREATE TABLE customers (name TEXT);"
              "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
              "INSERT INTO invoices SELECT i, i * 7 FROM n;");
  expect_refused_untouched("not a ringmail database: it has 2 tables but no schema_version",
                           "schema version 0", true);
}

TEST_F(ForeignFileTest, AnotherProgramsWalDatabaseIsRefusedByteForByte) {
  sqlite_exec(tmp_.path(),
              "PRAGMA journal_mode=WAL; CREATE TABLE foo (x); INSERT INTO foo "
              "VALUES (1);");
  ASSERT_EQ(journal_mode(tmp_.path()), "wal");
  expect_refused_untouched("not a ringmail database", "schema version 0", true);
}

TEST_F(ForeignFileTest, ANewerRingmailsDatabaseIsRefusedByteForByte) {
  make_ringmail_database_without_wal();
  sqlite_exec(tmp_.path(), "UPDATE schema_version SET version = 1000");
  expect_refused_untouched("database schema version 1000 is newer than this ringmail",
                           "schema version 1000", false);
}

TEST_F(ForeignFileTest, ANewerRingmailsWalDatabaseIsRefusedByteForByte) {
  {
    auto store = open(OpenMode::kReadWriteCreate);
    ASSERT_TRUE(store) << store.error().message;
    ASSERT_TRUE(store->connection().exec("UPDATE schema_version SET version = 1000"));
  }  // the last close checkpoints the WAL into the file and removes it
  ASSERT_EQ(journal_mode(tmp_.path()), "wal");
  expect_refused_untouched("is newer than this ringmail", "schema version 1000", false);
}

TEST_F(ForeignFileTest, ASchemaVersionWithoutItsRowIsRefusedByteForByte) {
  make_ringmail_database_without_wal();
  sqlite_exec(tmp_.path(), "DELETE FROM schema_version");
  expect_refused_untouched("not a ringmail database: it has", "schema version 0", true);
}

TEST_F(ForeignFileTest, ANegativeSchemaVersionIsRefusedByteForByte) {
  make_ringmail_database_without_wal();
  sqlite_exec(tmp_.path(), "UPDATE schema_version SET version = -1");
  expect_refused_untouched("not a ringmail database: schema_version is -1", "schema version -1",
                           true);
}

TEST_F(ForeignFileTest, AFileThatIsNotADatabaseIsRefusedByteForByte) {
  std::ofstream(tmp_.path(), std::ios::binary) << std::string(8192, 'x');
  expect_refused_untouched("file is not a database", "file is not a database", true);
}

// What must still work as before the fix.

TEST_F(ForeignFileTest, AMissingFileIsCreatedInWalModeAtTheCurrentVersion) {
  ASSERT_FALSE(fs::exists(tmp_.path()));
  expect_opens_current_in_wal(OpenMode::kReadWriteCreate);
}

TEST_F(ForeignFileTest, AMissingFileIsNotCreatedWithoutCreate) {
  EXPECT_FALSE(open(OpenMode::kReadWriteExisting));
  EXPECT_FALSE(open(OpenMode::kReadOnly));
  EXPECT_FALSE(fs::exists(tmp_.path()));
}

TEST_F(ForeignFileTest, AnEmptyFileBecomesAWalDatabase) {
  std::ofstream(tmp_.path(), std::ios::binary).flush();
  ASSERT_TRUE(fs::exists(tmp_.path()));
  expect_opens_current_in_wal(OpenMode::kReadWriteExisting);
}

TEST_F(ForeignFileTest, OurDatabaseWithoutWalIsSwitchedToWal) {
  make_ringmail_database_without_wal();
  {
    auto store = open(OpenMode::kReadWriteExisting);
    ASSERT_TRUE(store) << store.error().message;
  }
  EXPECT_EQ(journal_mode(tmp_.path()), "wal");
}

TEST_F(ForeignFileTest, AnOlderVersionWithoutWalIsMigratedAndSwitchedToWal) {
  make_ringmail_database_without_wal();
  sqlite_exec(tmp_.path(), std::string(testing::kUndoVersion5) +
                               "DROP TABLE destinations; DROP INDEX recipients_by_domain; "
                               "DROP TABLE urgent_due; "
                               "UPDATE schema_version SET version = 2");
  expect_opens_current_in_wal(OpenMode::kReadWriteExisting);
}

}  // namespace
}  // namespace ringmail::storage

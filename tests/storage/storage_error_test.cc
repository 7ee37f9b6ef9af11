// StorageError's classification and hints, from real SQLite failures on real files: a
// write lock held by another connection, files that are not databases or are damaged, a
// read-only connection, a directory that does not exist; plus the codes that cannot be
// produced cheaply (a full disk, a refused open) as values.
#include "storage/storage_error.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include "storage/schema.h"
#include "storage/sqlite_handle.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void write_bytes(const fs::path& p, std::string_view bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

std::string random_bytes(size_t n) {
  std::mt19937 rng(42);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// A migrated ringmail database with `rows` recipients, checkpointed into the main file.
void make_database(const std::string& path, int rows) {
  auto db = Connection::open(path, OpenMode::kReadWriteCreate);
  ASSERT_TRUE(db) << db.error().message;
  ASSERT_TRUE(migrate(*db));
  ASSERT_TRUE(db->exec(
      "INSERT INTO campaigns VALUES (1, 'c', 0);"
      "INSERT INTO messages VALUES (1, 1, NULL, 's@example.test', 'body', 0, 0);"));
  ASSERT_TRUE(db->exec(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " +
      std::to_string(rows) +
      ") INSERT INTO recipient_rows (message_id, address, domain, state, next_attempt_at, "
      "first_due_at, created_at, updated_at) SELECT 1, 'user' || i || "
      "'@example.test.with.a.long.domain.name', 'example.test', 'queued', 0, 0, 0, 0 FROM n"));
  ASSERT_TRUE(db->exec("PRAGMA wal_checkpoint(TRUNCATE)"));
}

TEST(StorageErrorTest, CodesAreClassified) {
  EXPECT_TRUE((StorageError{SQLITE_FULL, "x"}.disk_full()));
  EXPECT_TRUE((StorageError{SQLITE_IOERR_WRITE, "x", EFBIG}.disk_full()));
  EXPECT_TRUE((StorageError{SQLITE_IOERR_FSYNC, "x"}.disk_full()));
  EXPECT_TRUE((StorageError{SQLITE_BUSY, "x"}.locked()));
  EXPECT_TRUE((StorageError{SQLITE_BUSY_SNAPSHOT, "x"}.locked()));
  EXPECT_TRUE((StorageError{SQLITE_CORRUPT, "x"}.corrupt()));
  EXPECT_TRUE((StorageError{SQLITE_NOTADB, "x"}.corrupt()));
  EXPECT_TRUE((StorageError{SQLITE_READONLY, "x"}.read_only()));
  EXPECT_TRUE((StorageError{SQLITE_READONLY_DIRECTORY, "x"}.read_only()));
  // A refused open or write: errno says it is permissions, not a missing file or full disk.
  EXPECT_TRUE((StorageError{SQLITE_CANTOPEN, "x", EACCES}.read_only()));
  EXPECT_TRUE((StorageError{SQLITE_IOERR_WRITE, "x", EROFS}.read_only()));
  EXPECT_EQ((StorageError{SQLITE_CANTOPEN, "x", ENOENT}.failure()), StorageFailure::kOther);
  // No temp directory: errno is the last directory tried's, not the database's.
  EXPECT_EQ((StorageError{SQLITE_IOERR_GETTEMPPATH, "x", EROFS}.failure()),
            StorageFailure::kNoTempDirectory);
  EXPECT_EQ((StorageError{SQLITE_CONSTRAINT, "x"}.failure()), StorageFailure::kOther);
  EXPECT_EQ((StorageError{0, "x"}.failure()), StorageFailure::kOther);
}

std::string hint_of(int sqlite_code) { return std::string(StorageError{sqlite_code, "x"}.hint()); }

TEST(StorageErrorTest, EachClassHasItsHint) {
  // The disk-full text is what `enqueue` and `run` printed before hint() existed.
  EXPECT_EQ(hint_of(SQLITE_FULL),
            " (the disk or the file size limit is full; free space and run again)");
  EXPECT_NE(hint_of(SQLITE_BUSY).find("another process holds the database's write lock"),
            std::string::npos);
  EXPECT_NE(hint_of(SQLITE_NOTADB).find("not a ringmail database"), std::string::npos);
  EXPECT_NE(hint_of(SQLITE_CORRUPT).find("restore the database from a backup"),
            std::string::npos);
  EXPECT_NE(hint_of(SQLITE_READONLY).find("read-only"), std::string::npos);
  EXPECT_NE(hint_of(SQLITE_READONLY).find("cannot write"), std::string::npos);
  EXPECT_NE(hint_of(SQLITE_IOERR_GETTEMPPATH).find("SQLITE_TMPDIR"), std::string::npos);
  EXPECT_EQ(hint_of(SQLITE_CONSTRAINT), "");
  for (int code : {SQLITE_FULL, SQLITE_BUSY, SQLITE_CORRUPT, SQLITE_READONLY}) {
    const std::string h = hint_of(code);
    EXPECT_TRUE(h.starts_with(" (") && h.ends_with(")")) << h;
  }
}

TEST(StorageErrorTest, AWriteLockHeldPastTheBusyTimeoutIsLocked) {
  testing::TempDb tmp;
  make_database(tmp.path(), 10);
  auto holder = Connection::open(tmp.path(), OpenMode::kReadWriteExisting);
  ASSERT_TRUE(holder);
  ASSERT_TRUE(holder->begin());

  auto other = Connection::open(tmp.path(), OpenMode::kReadWriteExisting, "NORMAL", 100);
  ASSERT_TRUE(other) << other.error().message;
  // Opening a current database only reads: not held up by the writer.
  ASSERT_TRUE(migrate(*other)) << "migrate took the write lock";
  auto count = other->query_int("SELECT count(*) FROM recipients");
  ASSERT_TRUE(count) << count.error().message;
  EXPECT_EQ(count->value_or(-1), 10);

  auto begun = other->begin();
  ASSERT_FALSE(begun);
  EXPECT_TRUE(begun.error().locked()) << begun.error().sqlite_code;
  EXPECT_NE(begun.error().message.find(tmp.path()), std::string::npos) << begun.error().message;
  EXPECT_NE(begun.error().message.find("database is locked"), std::string::npos);
  holder->rollback();
}

TEST(StorageErrorTest, AShortLockIsWaitedOut) {
  testing::TempDb tmp;
  make_database(tmp.path(), 10);
  auto holder = Connection::open(tmp.path(), OpenMode::kReadWriteExisting);
  ASSERT_TRUE(holder);
  ASSERT_TRUE(holder->begin());
  std::thread release([&] {
    std::this_thread::sleep_for(200ms);
    holder->rollback();
  });
  auto other = Connection::open(tmp.path(), OpenMode::kReadWriteExisting, "NORMAL", 10'000);
  ASSERT_TRUE(other);
  auto begun = other->begin();
  release.join();
  ASSERT_TRUE(begun) << begun.error().message;
  EXPECT_TRUE(other->commit());
}

TEST(StorageErrorTest, AFileOfRandomBytesIsCorruptAndLeftAsItIs) {
  testing::TempDb tmp;
  const std::string bytes = random_bytes(64 * 1024);
  write_bytes(tmp.path(), bytes);
  for (OpenMode mode : {OpenMode::kReadWriteCreate, OpenMode::kReadWriteExisting}) {
    auto db = Connection::open(tmp.path(), mode);
    ASSERT_FALSE(db);
    EXPECT_TRUE(db.error().corrupt()) << db.error().message;
    EXPECT_NE(db.error().message.find(tmp.path()), std::string::npos) << db.error().message;
  }
  EXPECT_EQ(read_bytes(tmp.path()), bytes);
  EXPECT_FALSE(fs::exists(tmp.path() + "-wal"));
}

TEST(StorageErrorTest, ATruncatedDatabaseIsCorruptAndLeftAsItIs) {
  testing::TempDb tmp;
  make_database(tmp.path(), 5000);
  std::string bytes = read_bytes(tmp.path());
  ASSERT_GT(bytes.size(), 64u * 1024);
  bytes.resize(bytes.size() / 2);
  write_bytes(tmp.path(), bytes);
  std::optional<StorageError> error;
  if (auto db = Connection::open(tmp.path(), OpenMode::kReadWriteExisting); !db) {
    error = db.error();
  } else if (auto ok = migrate(*db); !ok) {
    error = ok.error();
  } else if (auto n = db->query_int("SELECT count(*) FROM recipients"); !n) {
    error = n.error();
  }
  ASSERT_TRUE(error) << "a truncated database was read without an error";
  EXPECT_TRUE(error->corrupt()) << error->message;
  EXPECT_EQ(read_bytes(tmp.path()), bytes);
}

TEST(StorageErrorTest, ADamagedPageInTheMiddleIsCorrupt) {
  testing::TempDb tmp;
  make_database(tmp.path(), 5000);
  std::string bytes = read_bytes(tmp.path());
  const size_t page = 4096, pages = bytes.size() / page;
  ASSERT_GT(pages, 20u);
  const std::string noise = random_bytes(page);
  bytes.replace(page * (pages / 2), page, noise);
  write_bytes(tmp.path(), bytes);
  auto db = Connection::open(tmp.path(), OpenMode::kReadWriteExisting);
  ASSERT_TRUE(db) << db.error().message;  // page 1 and the schema are intact
  // The damaged page may belong to the table or to one of its indexes: read them all.
  std::optional<StorageError> error;
  for (const char* sql :
       {"SELECT count(*) FROM recipients WHERE address LIKE 'user%'",
        "SELECT count(*) FROM recipient_rows INDEXED BY recipients_by_domain WHERE domain >= ''",
        "SELECT count(*) FROM recipient_rows INDEXED BY recipients_by_message WHERE message_id >= "
        "0",
        "SELECT count(*) FROM recipient_rows INDEXED BY recipients_due "
        "WHERE next_attempt_at >= 0 AND state IN ('queued', 'deferred')"}) {
    if (auto n = db->query_int(sql); !n) {
      error = n.error();
      break;
    }
  }
  ASSERT_TRUE(error) << "a damaged page was read without an error";
  EXPECT_TRUE(error->corrupt()) << error->message;
  EXPECT_NE(error->message.find("malformed"), std::string::npos) << error->message;
}

TEST(StorageErrorTest, AnotherProgramsDatabaseIsRefusedUnchanged) {
  testing::TempDb tmp;
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(tmp.path().c_str(), &raw), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(raw,
                           "PRAGMA journal_mode=WAL; CREATE TABLE invoices (id INTEGER PRIMARY "
                           "KEY, total INTEGER); INSERT INTO invoices VALUES (1, 100);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(raw);
  }
  auto db = Connection::open(tmp.path(), OpenMode::kReadWriteCreate);
  ASSERT_TRUE(db) << db.error().message;
  auto ok = migrate(*db);
  ASSERT_FALSE(ok);
  EXPECT_TRUE(ok.error().corrupt()) << ok.error().message;
  EXPECT_NE(ok.error().message.find("not a ringmail database"), std::string::npos)
      << ok.error().message;
  auto tables = db->query_int("SELECT count(*) FROM sqlite_master");
  ASSERT_TRUE(tables);
  EXPECT_EQ(tables->value_or(-1), 1);  // no schema_version, no campaigns...
}

TEST(StorageErrorTest, AnEmptyFileIsANewDatabase) {
  testing::TempDb tmp;
  write_bytes(tmp.path(), "");
  auto db = Connection::open(tmp.path(), OpenMode::kReadWriteCreate);
  ASSERT_TRUE(db) << db.error().message;
  EXPECT_TRUE(migrate(*db));
  auto v = schema_version(*db);
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, current_schema_version());
}

TEST(StorageErrorTest, AWriteThroughAReadOnlyConnectionIsReadOnly) {
  testing::TempDb tmp;
  make_database(tmp.path(), 1);
  auto db = Connection::open(tmp.path(), OpenMode::kReadOnly);
  ASSERT_TRUE(db) << db.error().message;
  auto ok = db->exec("DELETE FROM recipient_rows");
  ASSERT_FALSE(ok);
  EXPECT_TRUE(ok.error().read_only()) << ok.error().message;
  EXPECT_NE(ok.error().message.find("readonly"), std::string::npos) << ok.error().message;
}

TEST(StorageErrorTest, AFileThatCannotBeWrittenIsReadOnly) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes through file permissions";
  testing::TempDb tmp;
  make_database(tmp.path(), 1);
  fs::permissions(tmp.path(), fs::perms::owner_read | fs::perms::group_read);
  // SQLite opens a write-protected file read-only; open refuses it before a statement
  // could create a -shm file.
  auto db = Connection::open(tmp.path(), OpenMode::kReadWriteExisting);
  ASSERT_FALSE(db);
  EXPECT_TRUE(db.error().read_only()) << db.error().message;
  EXPECT_NE(db.error().message.find("cannot open database for writing"), std::string::npos)
      << db.error().message;
  EXPECT_FALSE(fs::exists(tmp.path() + "-shm"));
}

TEST(StorageErrorTest, AMissingFileOrDirectorySaysSo) {
  testing::TempDb tmp;
  auto missing = Connection::open(tmp.path(), OpenMode::kReadWriteExisting);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("no such database"), std::string::npos)
      << missing.error().message;
  const std::string nowhere = (tmp.dir() / "no" / "such" / "q.db").string();
  auto create = Connection::open(nowhere, OpenMode::kReadWriteCreate);
  ASSERT_FALSE(create);
  EXPECT_NE(create.error().message.find("no such directory: " + (tmp.dir() / "no" / "such").string()),
            std::string::npos)
      << create.error().message;
}

}  // namespace
}  // namespace ringmail::storage

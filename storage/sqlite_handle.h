// RAII over the SQLite C API: a Connection owns one sqlite3*, a Statement one prepared
// sqlite3_stmt* that is reset (not re-prepared) between uses. Errors are values.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "storage/storage_error.h"

namespace ringmail::storage {

class Statement {
 public:
  Statement() = default;
  // Bind by 1-based index. Text is copied by SQLite (SQLITE_TRANSIENT) unless noted.
  Statement& bind(int index, int64_t value);
  Statement& bind(int index, std::string_view text);
  // The text must stay live and unchanged until the statement is reset.
  Statement& bind_static(int index, std::string_view text);
  Statement& bind_blob(int index, std::string_view bytes);
  Statement& bind_null(int index);

  // SQLITE_ROW: true; SQLITE_DONE: false; anything else: the error.
  std::expected<bool, StorageError> step();
  // Steps to the end, ignoring rows.
  std::expected<void, StorageError> run();
  // Resets and clears bindings so the statement can be used again.
  void reset();

  int64_t column_int(int i) const { return sqlite3_column_int64(stmt_.get(), i); }
  bool column_is_null(int i) const { return sqlite3_column_type(stmt_.get(), i) == SQLITE_NULL; }
  // Valid until the next step/reset.
  std::string_view column_text(int i) const;
  std::string column_string(int i) const { return std::string(column_text(i)); }

  explicit operator bool() const { return stmt_ != nullptr; }

 private:
  friend class Connection;
  struct Finalize {
    void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
  };
  Statement(std::unique_ptr<sqlite3_stmt, Finalize> stmt, sqlite3* db, std::string what)
      : stmt_(std::move(stmt)), db_(db), what_(std::move(what)) {}
  StorageError error(int rc) const;

  std::unique_ptr<sqlite3_stmt, Finalize> stmt_;
  sqlite3* db_ = nullptr;  // owned by the Connection, which must outlive this statement
  std::string what_;       // the SQL's first words, for error messages
};

enum class OpenMode { kReadWriteCreate, kReadWriteExisting, kReadOnly };

class Connection {
 public:
  // Opens `path`; sets a busy timeout and foreign keys, and in a write mode reads the file
  // (one that is not a database is refused here, unwritten) and sets the given
  // `synchronous` ("NORMAL", "FULL"...). It writes nothing: WAL waits for use_wal().
  // The connection is used by one thread at a time.
  // A statement that needs a lock another process holds waits up to `busy_timeout_ms`
  // (long enough for another process's commit, or a sqlite3 shell's statement), then fails
  // with SQLITE_BUSY (StorageError::locked()). A file that cannot be opened says why: no
  // such database or directory, or permission (read_only()).
  static std::expected<Connection, StorageError> open(const std::string& path, OpenMode mode,
                                                      std::string_view synchronous = "NORMAL",
                                                      int busy_timeout_ms = 10000);

  // Switches the database to WAL mode, which writes the file's header unless it is in WAL
  // already: call it only once the file is known to be ours (migrate() does).
  std::expected<void, StorageError> use_wal();

  std::expected<void, StorageError> exec(std::string_view sql);
  std::expected<Statement, StorageError> prepare(std::string_view sql);
  // Runs `sql` that yields one integer (e.g. SELECT count(*)); nullopt when no row.
  std::expected<std::optional<int64_t>, StorageError> query_int(std::string_view sql);

  // BEGIN IMMEDIATE / COMMIT / ROLLBACK.
  std::expected<void, StorageError> begin();
  std::expected<void, StorageError> commit();
  void rollback();  // best effort; a failed rollback leaves SQLite's own recovery to act

  sqlite3* raw() const { return db_.get(); }
  const std::string& path() const { return path_; }
  int64_t changes() const { return sqlite3_changes64(db_.get()); }
  StorageError error(int rc, std::string_view what) const;

 private:
  struct Close {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  Connection(std::unique_ptr<sqlite3, Close> db, std::string path)
      : db_(std::move(db)), path_(std::move(path)) {}

  std::unique_ptr<sqlite3, Close> db_;
  std::string path_;
};

}  // namespace ringmail::storage

#include "storage/sqlite_handle.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace ringmail::storage {

StorageFailure StorageError::failure() const {
  const int primary = sqlite_code & 0xff;
  // Before the permission test: SQLite's errno here is that of the last temp directory
  // it tried (EROFS, EACCES), which says nothing about the database file.
  if (sqlite_code == SQLITE_IOERR_GETTEMPPATH) return StorageFailure::kNoTempDirectory;
  // A write refused by the file system's permissions surfaces as an open or I/O error;
  // errno tells it from a full disk or a missing file.
  const bool permission =
      system_errno == EACCES || system_errno == EPERM || system_errno == EROFS;
  if (primary == SQLITE_READONLY || primary == SQLITE_PERM) return StorageFailure::kReadOnly;
  if ((primary == SQLITE_CANTOPEN || primary == SQLITE_IOERR) && permission)
    return StorageFailure::kReadOnly;
  if (primary == SQLITE_FULL || sqlite_code == SQLITE_IOERR_WRITE ||
      sqlite_code == SQLITE_IOERR_TRUNCATE || sqlite_code == SQLITE_IOERR_FSYNC)
    return StorageFailure::kDiskFull;
  if (primary == SQLITE_BUSY) return StorageFailure::kLocked;
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) return StorageFailure::kCorrupt;
  return StorageFailure::kOther;
}

std::string_view StorageError::hint() const {
  switch (failure()) {
    case StorageFailure::kDiskFull:
      return " (the disk or the file size limit is full; free space and run again)";
    case StorageFailure::kLocked:
      return " (another process holds the database's write lock: another ringmail run or "
             "enqueue, or a sqlite3 shell, did not release it within the busy timeout; run "
             "again when it is done)";
    case StorageFailure::kCorrupt:
      return " (the file is not a ringmail database, or it is damaged; check that the path "
             "names the right file, or restore the database from a backup)";
    case StorageFailure::kReadOnly:
      return " (read-only or permission denied: ringmail cannot write the database file or "
             "its directory, where SQLite keeps the -wal and -shm files beside it; make both "
             "writable for this user and run again)";
    case StorageFailure::kNoTempDirectory:
      return " (SQLite found no writable directory for a temporary file, which a large sort "
             "or update needs: set SQLITE_TMPDIR or TMPDIR to one, or make /var/tmp, /tmp or "
             "the working directory writable, and run again)";
    case StorageFailure::kOther:
      break;
  }
  return "";
}

namespace {

std::string first_words(std::string_view sql) {
  size_t start = sql.find_first_not_of(" \n\t");
  if (start == std::string_view::npos) return "";
  sql.remove_prefix(start);
  size_t end = sql.find_first_of("(\n");
  std::string out(sql.substr(0, std::min<size_t>(end, 48)));
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

StorageError Statement::error(int rc) const {
  int code = db_ ? sqlite3_extended_errcode(db_) : rc;
  const char* path = db_ ? sqlite3_db_filename(db_, "main") : "";
  return {code,
          fmt::format("{}: {}: {}", path ? path : "", what_,
                      db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc)),
          db_ ? sqlite3_system_errno(db_) : 0};
}

Statement& Statement::bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_.get(), index, value);
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  sqlite3_bind_text(stmt_.get(), index, text.data(), static_cast<int>(text.size()),
                    SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind_static(int index, std::string_view text) {
  sqlite3_bind_text(stmt_.get(), index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
  return *this;
}

Statement& Statement::bind_blob(int index, std::string_view bytes) {
  sqlite3_bind_blob64(stmt_.get(), index, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind_null(int index) {
  sqlite3_bind_null(stmt_.get(), index);
  return *this;
}

std::expected<bool, StorageError> Statement::step() {
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  StorageError e = error(rc);
  sqlite3_reset(stmt_.get());
  return std::unexpected(std::move(e));
}

std::expected<void, StorageError> Statement::run() {
  while (true) {
    auto row = step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
  }
  reset();
  return {};
}

void Statement::reset() {
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
}

std::string_view Statement::column_text(int i) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_.get(), i));
  if (p == nullptr) return {};
  return {p, static_cast<size_t>(sqlite3_column_bytes(stmt_.get(), i))};
}

StorageError Connection::error(int rc, std::string_view what) const {
  int code = db_ ? sqlite3_extended_errcode(db_.get()) : rc;
  return {code,
          fmt::format("{}: {}: {}", path_, what,
                      db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc)),
          db_ ? sqlite3_system_errno(db_.get()) : 0};
}

std::expected<Connection, StorageError> Connection::open(const std::string& path, OpenMode mode,
                                                         std::string_view synchronous,
                                                         int busy_timeout_ms) {
  int flags = SQLITE_OPEN_NOMUTEX;  // one thread at a time per connection
  switch (mode) {
    case OpenMode::kReadWriteCreate:
      flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
      break;
    case OpenMode::kReadWriteExisting:
      flags |= SQLITE_OPEN_READWRITE;
      break;
    case OpenMode::kReadOnly:
      flags |= SQLITE_OPEN_READONLY;
      break;
  }
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  std::unique_ptr<sqlite3, Close> db(raw);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    int system_errno = raw ? sqlite3_system_errno(raw) : 0;
    if ((rc & 0xff) == SQLITE_CANTOPEN) {
      // SQLite retries a refused read-write open read-only, so its errno is the retry's
      // (often ENOENT); ask the file system why directly.
      const std::filesystem::path dir = std::filesystem::path(path).parent_path();
      const std::string dir_name = dir.empty() ? "." : dir.string();
      const bool exists = ::access(path.c_str(), F_OK) == 0;
      const int exists_errno = errno;
      if (exists) {
        const int need = mode == OpenMode::kReadOnly ? R_OK : R_OK | W_OK;
        if (::access(path.c_str(), need) != 0) system_errno = errno;
      } else if (exists_errno != ENOENT) {
        system_errno = exists_errno;  // e.g. a directory on the way that is not searchable
      } else if (mode != OpenMode::kReadWriteCreate) {
        msg += " (no such database: create it with `ringmail enqueue`)";
      } else if (::access(dir_name.c_str(), F_OK) != 0) {
        msg += fmt::format(" (no such directory: {})", dir_name);
      } else if (::access(dir_name.c_str(), W_OK | X_OK) != 0) {
        system_errno = errno;
        msg += fmt::format(" (cannot create it in {}: {})", dir_name, std::strerror(system_errno));
      }
    }
    return std::unexpected(
        StorageError{raw ? sqlite3_extended_errcode(raw) : rc,
                     fmt::format("{}: cannot open database: {}", path, msg), system_errno});
  }
  if (mode != OpenMode::kReadOnly && sqlite3_db_readonly(raw, "main") == 1) {
    // SQLite opened a write-protected file read-only. Refuse before the first statement:
    // reading a WAL database would create a -shm file as read-only as the database, which
    // would still refuse writes after the operator has fixed the file's permissions.
    const int system_errno = ::access(path.c_str(), W_OK) != 0 ? errno : EACCES;
    return std::unexpected(StorageError{
        SQLITE_READONLY,
        fmt::format("{}: cannot open database for writing: {}", path, std::strerror(system_errno)),
        system_errno});
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, busy_timeout_ms);
  Connection c(std::move(db), path);
  if (mode != OpenMode::kReadOnly) {
    // Only read here: a file that is not a database is refused at open, untouched. The
    // switch to WAL writes the header of a file not yet in WAL, so it waits for use_wal(),
    // once the caller knows the file is its own.
    auto journal = c.prepare("PRAGMA journal_mode");
    if (!journal) return std::unexpected(journal.error());
    if (auto row = journal->step(); !row) return std::unexpected(row.error());
    journal->reset();
    if (auto ok = c.exec(fmt::format("PRAGMA synchronous={}", synchronous)); !ok)
      return std::unexpected(ok.error());
  }
  if (auto ok = c.exec("PRAGMA foreign_keys=ON"); !ok) return std::unexpected(ok.error());
  return c;
}

std::expected<void, StorageError> Connection::use_wal() {
  // WAL: readers (status) never block the writer, and a commit appends to the log
  // instead of rewriting pages, so grouped commits stay cheap.
  auto wal = prepare("PRAGMA journal_mode=WAL");
  if (!wal) return std::unexpected(wal.error());
  auto row = wal->step();
  if (!row) return std::unexpected(row.error());
  if (*row && wal->column_text(0) != "wal") {
    return std::unexpected(StorageError{
        0, fmt::format("{}: cannot switch to WAL mode (journal_mode is {})", path_,
                       wal->column_text(0))});
  }
  wal->reset();
  return {};
}

std::expected<void, StorageError> Connection::exec(std::string_view sql) {
  std::string text(sql);
  char* msg = nullptr;
  int rc = sqlite3_exec(db_.get(), text.c_str(), nullptr, nullptr, &msg);
  if (rc != SQLITE_OK) {
    StorageError e{sqlite3_extended_errcode(db_.get()),
                   fmt::format("{}: {}: {}", path_, first_words(sql), msg ? msg : sqlite3_errstr(rc)),
                   sqlite3_system_errno(db_.get())};
    sqlite3_free(msg);
    return std::unexpected(std::move(e));
  }
  return {};
}

std::expected<Statement, StorageError> Connection::prepare(std::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db_.get(), sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  std::unique_ptr<sqlite3_stmt, Statement::Finalize> stmt(raw);
  if (rc != SQLITE_OK) return std::unexpected(error(rc, "prepare " + first_words(sql)));
  return Statement(std::move(stmt), db_.get(), first_words(sql));
}

std::expected<std::optional<int64_t>, StorageError> Connection::query_int(std::string_view sql) {
  auto st = prepare(sql);
  if (!st) return std::unexpected(st.error());
  auto row = st->step();
  if (!row) return std::unexpected(row.error());
  if (!*row || st->column_is_null(0)) return std::optional<int64_t>{};
  return std::optional<int64_t>{st->column_int(0)};
}

std::expected<void, StorageError> Connection::begin() { return exec("BEGIN IMMEDIATE"); }
std::expected<void, StorageError> Connection::commit() { return exec("COMMIT"); }
void Connection::rollback() {
  if (!sqlite3_get_autocommit(db_.get())) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

}  // namespace ringmail::storage

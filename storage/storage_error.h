// The one error type of storage/: what failed, in words for a person, plus SQLite's
// extended result code so callers can tell a full disk, a locked, corrupt or read-only
// database from the rest, and say what the operator can do about it (hint()).
#pragma once

#include <string>
#include <string_view>

namespace ringmail::storage {

// What an operator can do something about; everything else is kOther.
enum class StorageFailure {
  kOther,
  kDiskFull,  // the disk or RLIMIT_FSIZE is full
  kLocked,    // another process held the write lock past the busy timeout
  kCorrupt,   // not an SQLite database, truncated, or a damaged page
  kReadOnly,  // the file or its directory cannot be written by this user
  kNoTempDirectory,  // a large sort or statement found no writable directory for a temp file
};

struct StorageError {
  int sqlite_code = 0;  // extended result code (SQLITE_FULL, SQLITE_BUSY...); 0: not SQLite
  std::string message;  // one line: "PATH: what was being done: sqlite's message"
  // errno of the system call that failed, when SQLite saw one (sqlite3_system_errno); it
  // tells "permission denied" from "no such file" when a file cannot be opened.
  int system_errno = 0;

  StorageFailure failure() const;
  // True for the errors that mean "the disk (or the file size limit) is full".
  bool disk_full() const { return failure() == StorageFailure::kDiskFull; }
  bool locked() const { return failure() == StorageFailure::kLocked; }
  bool corrupt() const { return failure() == StorageFailure::kCorrupt; }
  bool read_only() const { return failure() == StorageFailure::kReadOnly; }

  // What the operator can do, to append to `message`: " (the disk ... is full; free space
  // and run again)", or "" when there is nothing specific to say.
  std::string_view hint() const;
};

}  // namespace ringmail::storage

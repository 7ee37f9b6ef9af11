// The one error type of storage/: what failed, in words for a person, plus SQLite's
// extended result code so callers can tell a full disk or a busy database from the rest.
#pragma once

#include <string>

namespace ringmail::storage {

struct StorageError {
  int sqlite_code = 0;  // extended result code (SQLITE_FULL, SQLITE_BUSY...); 0: not SQLite
  std::string message;  // one line: "PATH: what was being done: sqlite's message"

  // True for the errors that mean "the disk (or the file size limit) is full".
  bool disk_full() const;
};

}  // namespace ringmail::storage

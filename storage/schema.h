// The database schema as a list of migrations; schema_version holds how many have been
// applied. storage/README.md documents every table.
#pragma once

#include <expected>

#include "storage/sqlite_handle.h"

namespace ringmail::storage {

// The version this binary writes. A database with a higher version is refused.
int current_schema_version();

// Refuses a database of a newer ringmail or of another program without writing to it;
// then switches the database to WAL and applies every migration it lacks, each in its
// own transaction. Idempotent.
std::expected<void, StorageError> migrate(Connection& db);

// The database's version (0 for an empty file).
std::expected<int, StorageError> schema_version(Connection& db);

}  // namespace ringmail::storage

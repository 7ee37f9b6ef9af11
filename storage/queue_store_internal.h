// Helpers shared by the files that define QueueStore (queue_store.cc, queue_reports.cc,
// queue_suppressions.cc, queue_retention.cc, queue_urgent.cc); not part of storage/'s
// interface.
#pragma once

#include <cctype>
#include <expected>
#include <string>
#include <string_view>

#include "storage/storage_error.h"

namespace ringmail::storage::queue_store_internal {

using Status = std::expected<void, StorageError>;

inline std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

template <typename T>
std::unexpected<StorageError> fail(const std::expected<T, StorageError>& e) {
  return std::unexpected(e.error());
}

}  // namespace ringmail::storage::queue_store_internal

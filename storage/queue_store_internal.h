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

// A pending row of `recipient_rows` that waits for its claim: neither a lease nor a
// delivery covers its id (ranges of each never overlap, so the one starting last at or
// before the id is the only one that can).
inline constexpr std::string_view kPendingWaits =
    "coalesce((SELECT hi FROM leases WHERE lo <= recipient_rows.id ORDER BY lo DESC LIMIT 1), "
    "0) < recipient_rows.id AND coalesce((SELECT hi FROM deliveries WHERE lo <= "
    "recipient_rows.id ORDER BY lo DESC LIMIT 1), 0) < recipient_rows.id";

// `r`, a row of a lease's id range joined by rowid, is one of the lease's recipients still
// in flight: pending, and no deliveries range covers it (as for kPendingWaits). `+r.state`:
// no index for the planner to scan once per range.
inline constexpr std::string_view kLeasedPendingRow =
    "+r.state = 'pending' AND coalesce((SELECT hi FROM deliveries WHERE lo <= r.id ORDER BY lo "
    "DESC LIMIT 1), 0) < r.id";

template <typename T>
std::unexpected<StorageError> fail(const std::expected<T, StorageError>& e) {
  return std::unexpected(e.error());
}

}  // namespace ringmail::storage::queue_store_internal

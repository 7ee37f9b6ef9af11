// QueueStore's suppression list: add, remove and list addresses (compared lower-cased).
// suppress() is also called by apply() when the policy says to suppress an address.
#include "storage/queue_store.h"
#include "storage/queue_store_internal.h"

namespace ringmail::storage {

using queue_store_internal::fail;
using queue_store_internal::lower;

// ---------------------------------------------------------------- suppression list

std::expected<bool, StorageError> QueueStore::suppress(std::string_view address,
                                                       std::string_view reason, int64_t now_ms) {
  auto st = cached(insert_suppression_,
                   "INSERT OR IGNORE INTO suppressions(address, reason, created_at) "
                   "VALUES (?1, ?2, ?3)");
  if (!st) return fail(st);
  (*st)->bind(1, lower(address)).bind(2, reason).bind(3, now_ms);
  if (auto ok = (*st)->run(); !ok) return fail(ok);
  return db_.changes() > 0;
}

std::expected<bool, StorageError> QueueStore::unsuppress(std::string_view address) {
  auto st = db_.prepare("DELETE FROM suppressions WHERE address = ?1");
  if (!st) return fail(st);
  st->bind(1, lower(address));
  if (auto ok = st->run(); !ok) return fail(ok);
  return db_.changes() > 0;
}

std::expected<std::vector<Suppression>, StorageError> QueueStore::suppressions() {
  auto st = db_.prepare("SELECT address, reason, created_at FROM suppressions ORDER BY address");
  if (!st) return fail(st);
  std::vector<Suppression> out;
  while (true) {
    auto row = st->step();
    if (!row) return fail(row);
    if (!*row) break;
    out.push_back({st->column_string(0), st->column_string(1), st->column_int(2)});
  }
  return out;
}

}  // namespace ringmail::storage

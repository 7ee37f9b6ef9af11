// QueueStore's list of urgent recipients (`enqueue --urgent`, schema version 4's
// `urgent_due`): read first by every claim and emptied by it, filled again by give-backs.
#include <string>
#include <utility>
#include <vector>

#include "storage/queue_store.h"
#include "storage/queue_store_internal.h"

namespace ringmail::storage {

std::expected<void, StorageError> QueueStore::read_urgent(size_t limit, int64_t now_ms,
                                                          std::vector<ClaimedRecipient>& out) {
  // LEFT JOIN: a listed recipient purged meanwhile is taken off the list too. The table,
  // not the view: an urgent recipient is never pending (add_recipient), and SQLite
  // cannot fold a view with joins into the right side of a LEFT JOIN, so it built the
  // whole view per claim (1.3 s at a million rows, in a review).
  auto sel = cached(select_urgent_,
                    "SELECT u.recipient_id, r.message_id, r.address, r.attempts, r.first_due_at, "
                    "r.state, u.next_attempt_at "
                    "FROM urgent_due u LEFT JOIN recipient_rows r ON r.id = u.recipient_id "
                    "WHERE u.next_attempt_at <= ?1 ORDER BY u.next_attempt_at LIMIT ?2");
  // By the whole key: recipient_id alone would scan the table once per row.
  auto del = cached(delete_urgent_,
                    "DELETE FROM urgent_due WHERE next_attempt_at = ?1 AND recipient_id = ?2");
  if (!sel) return std::unexpected(sel.error());
  if (!del) return std::unexpected(del.error());
  Statement& s = **sel;
  s.bind(1, now_ms).bind(2, static_cast<int64_t>(limit));
  std::vector<std::pair<int64_t, int64_t>> listed;  // (next_attempt_at, recipient_id)
  while (true) {
    auto row = s.step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    listed.emplace_back(s.column_int(6), s.column_int(0));
    // A row listed but no longer waiting (suppressed at a run's start, say) is only
    // taken off the list.
    const std::string state = s.column_string(5);
    if (state != "queued" && state != "deferred") continue;
    out.push_back(
        {s.column_int(0), s.column_int(1), s.column_string(2), s.column_int(3), s.column_int(4), true});
  }
  s.reset();
  // Off the list once claimed: urgency is for the first attempt; a retry waits its backoff
  // like any other. A release or a drain's not-attempted outcome lists it again
  // (relist_urgent); a crash does not (the lease recovery does not know it was urgent).
  for (const auto& [due, id] : listed) {
    (*del)->bind(1, due).bind(2, id);
    if (auto ok = (*del)->run(); !ok) return ok;
  }
  return {};
}

std::expected<void, StorageError> QueueStore::relist_urgent(const std::vector<int64_t>& ids) {
  auto st = cached(relist_urgent_,
                   "INSERT OR IGNORE INTO urgent_due(next_attempt_at, recipient_id) "
                   "SELECT next_attempt_at, id FROM recipient_rows "
                   "WHERE id = ?1 AND state IN ('queued', 'deferred')");
  if (!st) return std::unexpected(st.error());
  for (int64_t id : ids) {
    (*st)->bind(1, id);
    if (auto ok = (*st)->run(); !ok) return ok;
  }
  return {};
}

}  // namespace ringmail::storage

// QueueStore's destination state (storage/README.md, "Destinations"): a destination's pause
// or recovery recorded in `destinations`, and a paused domain's due recipients postponed
// to the pause's end, so claims skip them and a later run does not learn it again.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "storage/queue_store.h"
#include "storage/queue_store_internal.h"

namespace ringmail::storage {

using queue_store_internal::fail;
using queue_store_internal::kPendingWaits;

std::expected<void, StorageError> QueueStore::record_destination(std::string_view name,
                                                                bool paused, int64_t until_ms,
                                                                const smtp::Reply& reason,
                                                                int64_t now_ms) {
  if (!paused) {
    std::erase_if(postponed_, [&](const auto& entry) { return entry.second.name == name; });
    auto st = cached(resume_destination_,
                     "UPDATE destinations SET state = 'up', paused_until = NULL, failures = 0, "
                     "updated_at = ?2 WHERE name = ?1 AND state <> 'up'");
    if (!st) return fail(st);
    (*st)->bind(1, name).bind(2, now_ms);
    return (*st)->run();
  }
  // Several reports of one pause (one per domain it deferred) carry the same end: the
  // failure count goes up once per pause.
  auto st = cached(pause_destination_,
                   "INSERT INTO destinations(name, state, paused_until, failures, last_code, "
                   "last_enhanced, last_text, updated_at) VALUES (?1, 'paused', ?2, 1, ?3, ?4, ?5, ?6) "
                   "ON CONFLICT(name) DO UPDATE SET "
                   "failures = failures + (state <> 'paused' OR paused_until IS NOT ?2), "
                   "state = 'paused', paused_until = ?2, last_code = ?3, last_enhanced = ?4, "
                   "last_text = ?5, updated_at = ?6");
  if (!st) return fail(st);
  const std::string enhanced = reason.enhanced.to_string();
  (*st)->bind(1, name).bind(2, until_ms).bind(3, reason.code).bind_static(4, enhanced);
  (*st)->bind_static(5, reason.text).bind(6, now_ms);
  return (*st)->run();
}

std::expected<uint64_t, StorageError> QueueStore::postpone_domain(std::string_view name,
                                                                  std::string_view domain,
                                                                  int64_t until_ms) {
  // Pauses that are over go now and then, so a service that meets many dead domains
  // (whose pools may be forgotten before they report "up") keeps only live ones.
  if (postponed_.size() >= 1024) {
    const int64_t now_ms = unix_now_ms();
    std::erase_if(postponed_, [&](const auto& entry) { return entry.second.until_ms <= now_ms; });
  }
  Postponed& p = postponed_[std::string(domain)];
  p.until_ms = std::max(p.until_ms, until_ms);
  p.name = std::string(name);
  // Uses recipients_by_domain (domain, then rowid); the rows moved change only in the due
  // index. Scoped, the domain index is forced: by_message would walk every row of the
  // message. In chunks of the domain's rows, walked by rowid: one statement over a
  // campaign's million rows would keep a statement journal of every page it changes, in
  // memory on this connection (temp_store, tune_for_delivery), ~100 MB per million.
  constexpr int64_t kChunk = 10000;
  auto end = cached(postpone_chunk_end_,
                    "SELECT rowid FROM recipient_rows INDEXED BY recipients_by_domain "
                    "WHERE domain = ?1 AND rowid > ?2 ORDER BY rowid LIMIT 1 OFFSET ?3");
  // Pending rows still waiting for their claim become ordinary queued rows, due then:
  // their unclaimed range's claim skips them (it takes pending rows only).
  auto st = only_message_
                ? cached(postpone_domain_of_message_,
                         fmt::format("UPDATE recipient_rows INDEXED BY recipients_by_domain "
                                     "SET next_attempt_at = ?2, state = CASE state WHEN "
                                     "'pending' THEN 'queued' ELSE state END "
                                     "WHERE domain = ?1 AND rowid > ?4 AND rowid <= ?5 "
                                     "AND (state IN ('queued', 'deferred') OR (state = "
                                     "'pending' AND {})) AND next_attempt_at < ?2 "
                                     "AND message_id = ?3",
                                     kPendingWaits))
                : cached(postpone_domain_,
                         fmt::format("UPDATE recipient_rows INDEXED BY recipients_by_domain "
                                     "SET next_attempt_at = ?2, state = CASE state WHEN "
                                     "'pending' THEN 'queued' ELSE state END "
                                     "WHERE domain = ?1 AND rowid > ?4 AND rowid <= ?5 "
                                     "AND (state IN ('queued', 'deferred') OR (state = "
                                     "'pending' AND {})) AND next_attempt_at < ?2",
                                     kPendingWaits));
  if (!end) return fail(end);
  if (!st) return fail(st);
  uint64_t moved = 0;
  for (int64_t after = 0;;) {
    (*end)->bind(1, domain).bind(2, after).bind(3, kChunk - 1);
    auto row = (*end)->step();
    if (!row) return fail(row);
    const int64_t last = *row ? (*end)->column_int(0) : INT64_MAX;  // else: the rest
    (*end)->reset();
    (*st)->bind(1, domain).bind(2, until_ms).bind(4, after).bind(5, last);
    if (only_message_) (*st)->bind(3, *only_message_);
    if (auto ok = (*st)->run(); !ok) return fail(ok);
    moved += static_cast<uint64_t>(db_.changes());
    if (last == INT64_MAX) return moved;
    after = last;
  }
}

}  // namespace ringmail::storage

// QueueStore's retention: removing recipients whose outcome is final and old enough
// (`ringmail purge`), so a database that serves for months stays the size of its recent
// work and the scans of a run's start stay short.
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "storage/queue_store.h"
#include "storage/queue_store_internal.h"

namespace ringmail::storage {

using queue_store_internal::fail;

namespace {

// The rows a purge removes; ?1 ?2 the id range, ?3 the cut-off, ?4 the campaign id or NULL
// (its messages listed once in temp.purge_messages: messages has no campaign index, and a
// scan of it per batch would hold the write lock for as long as the table is big).
// Only final states: a queued, deferred or in-flight recipient is never touched.
constexpr std::string_view kPurgeable =
    "id BETWEEN ?1 AND ?2 AND state IN ('delivered', 'bounced', 'expired', 'suppressed') "
    "AND updated_at < ?3 AND (?4 IS NULL OR message_id IN (SELECT id FROM temp.purge_messages))";

// Bodies dropped per transaction: freeing a body walks its overflow pages.
constexpr size_t kBodiesPerTransaction = 64;

void bind_range(Statement& st, int64_t lo, int64_t hi, int64_t before_ms,
                std::optional<int64_t> campaign_id) {
  st.bind(1, lo).bind(2, hi).bind(3, before_ms);
  if (campaign_id) {
    st.bind(4, *campaign_id);
  } else {
    st.bind_null(4);
  }
}


// A purge's statements, prepared once per purge (or per step of one).
struct PurgeStatements {
  Statement count_states;     // dry run: the states of what would go
  Statement drop_attempts;    // the attempt log first: it refers to the recipients by id
  Statement drop_recipients;  // returning their states and messages
  Statement drop_deliveries;  // the deliveries ranges (queue_pending.cc) left with no row
};

std::expected<PurgeStatements, StorageError> prepare_purge(Connection& db) {
  if (auto ok = db.exec("CREATE TEMP TABLE IF NOT EXISTS purge_messages(id INTEGER PRIMARY KEY)");
      !ok)
    return fail(ok);
  auto count_states = db.prepare(
      fmt::format("SELECT state, count(*) FROM recipients WHERE {} GROUP BY state", kPurgeable));
  if (!count_states) return fail(count_states);
  auto drop_attempts = db.prepare(
      fmt::format("DELETE FROM attempts WHERE recipient_id IN (SELECT id FROM recipients WHERE {})",
                  kPurgeable));
  if (!drop_attempts) return fail(drop_attempts);
  // Through the view, which knows which pending rows are delivered; a pending row that
  // goes is a delivered one.
  auto drop_recipients = db.prepare(
      fmt::format("DELETE FROM recipient_rows WHERE id IN (SELECT id FROM recipients WHERE {}) "
                  "RETURNING CASE state WHEN 'pending' THEN 'delivered' ELSE state END, message_id",
                  kPurgeable));
  if (!drop_recipients) return fail(drop_recipients);
  auto drop_deliveries = db.prepare(
      "DELETE FROM deliveries WHERE lo >= coalesce((SELECT max(lo) FROM deliveries "
      "WHERE lo <= ?1), ?1) AND lo <= ?2 AND NOT EXISTS (SELECT 1 FROM recipient_rows "
      "WHERE id BETWEEN deliveries.lo AND deliveries.hi)");
  if (!drop_deliveries) return fail(drop_deliveries);
  return PurgeStatements{std::move(*count_states), std::move(*drop_attempts),
                         std::move(*drop_recipients), std::move(*drop_deliveries)};
}

// Adds the rows `st` returns (state, count) or, not grouped, (state, message_id) to
// `counts`, and in the second case the messages to `emptied`.
std::expected<void, StorageError> tally(Statement& st, bool grouped, PurgeCounts& counts,
                                        std::set<int64_t>& emptied) {
  while (true) {
    auto r = st.step();
    if (!r) return fail(r);
    if (!*r) return {};
    auto state = parse_state(st.column_text(0));
    if (state) counts.recipients[*state] += grouped ? uint64_t(st.column_int(1)) : 1;
    if (!grouped) emptied.insert(st.column_int(1));
  }
}

// Ids `lo`..`hi` in one transaction: an interrupted purge has removed whole ranges,
// nothing half, and a `run` on the same database gets the write lock between them.
std::expected<void, StorageError> purge_range(Connection& db, PurgeStatements& st, int64_t lo,
                                              int64_t hi, int64_t before_ms,
                                              std::optional<int64_t> campaign_id,
                                              PurgeCounts& counts, std::set<int64_t>& emptied) {
  if (auto ok = db.begin(); !ok) return fail(ok);
  auto work = [&]() -> std::expected<void, StorageError> {
    bind_range(st.drop_attempts, lo, hi, before_ms, campaign_id);
    auto dropped = st.drop_attempts.run();
    st.drop_attempts.reset();
    if (!dropped) return fail(dropped);
    counts.attempts += uint64_t(db.changes());
    bind_range(st.drop_recipients, lo, hi, before_ms, campaign_id);
    auto ok = tally(st.drop_recipients, false, counts, emptied);
    st.drop_recipients.reset();
    if (!ok) return ok;
    st.drop_deliveries.bind(1, lo).bind(2, hi);
    auto emptied_ranges = st.drop_deliveries.run();
    st.drop_deliveries.reset();
    if (!emptied_ranges) return fail(emptied_ranges);
    return db.commit();
  };
  auto ok = work();
  if (!ok) db.rollback();
  return ok;
}

// A message whose every recipient is gone keeps its row, so its idempotency key still
// refuses a second enqueue, but not its body. Only the messages in `candidates` (those
// that lost recipients) are looked at, by id, a few per transaction: freeing a body
// frees its overflow pages, and all of them in one transaction would hold the write lock
// (and grow the WAL) for as long as the bodies are big.
std::expected<void, StorageError> drop_orphan_bodies(Connection& db,
                                                     const std::set<int64_t>& candidates,
                                                     PurgeCounts& counts) {
  auto drop_body = db.prepare(
      "UPDATE messages SET body = X'' WHERE id = ?1 AND length(body) > 0 AND NOT EXISTS "
      "(SELECT 1 FROM recipient_rows WHERE message_id = ?1)");
  if (!drop_body) return fail(drop_body);
  auto next = candidates.begin();
  while (next != candidates.end()) {
    if (auto ok = db.begin(); !ok) return fail(ok);
    auto work = [&]() -> std::expected<void, StorageError> {
      for (size_t n = 0; n < kBodiesPerTransaction && next != candidates.end(); ++n, ++next) {
        drop_body->bind(1, *next);
        auto ok = drop_body->run();
        drop_body->reset();
        if (!ok) return fail(ok);
        counts.bodies += uint64_t(db.changes());
      }
      return db.commit();
    };
    if (auto ok = work(); !ok) {
      db.rollback();
      return fail(ok);
    }
  }
  return {};
}

}  // namespace

uint64_t PurgeCounts::recipients_total() const {
  uint64_t n = 0;
  for (const auto& [state, count] : recipients) n += count;
  return n;
}

std::expected<std::optional<int64_t>, StorageError> QueueStore::campaign_id(std::string_view name) {
  auto st = db_.prepare("SELECT id FROM campaigns WHERE name = ?1");
  if (!st) return fail(st);
  st->bind(1, name);
  auto row = st->step();
  if (!row) return fail(row);
  if (!*row) return std::optional<int64_t>{};
  return std::optional<int64_t>{st->column_int(0)};
}

std::expected<PurgeCounts, StorageError> QueueStore::purge_final(int64_t before_ms,
                                                                 std::optional<int64_t> campaign_id,
                                                                 bool dry_run, int64_t batch) {
  PurgeCounts counts;
  auto bounds = db_.prepare("SELECT min(id), max(id) FROM recipient_rows");
  if (!bounds) return fail(bounds);
  auto row = bounds->step();
  if (!row) return fail(row);
  if (!*row || bounds->column_is_null(0)) return counts;
  const int64_t first = bounds->column_int(0);
  // The newest recipient stays (see purge_final_step): its id is never given again.
  const int64_t last = bounds->column_int(1) - 1;
  bounds->reset();

  auto st = prepare_purge(db_);
  if (!st) return fail(st);
  if (auto ok = db_.exec("DELETE FROM temp.purge_messages"); !ok) return fail(ok);
  if (campaign_id) {
    auto list = db_.prepare(
        "INSERT INTO temp.purge_messages SELECT id FROM messages WHERE campaign_id = ?1");
    if (!list) return fail(list);
    list->bind(1, *campaign_id);
    if (auto ok = list->run(); !ok) return fail(ok);
  }

  std::set<int64_t> emptied;  // messages that lost recipients: bodies to check
  for (int64_t lo = first; lo <= last; lo += batch) {
    const int64_t hi = std::min(last, lo + batch - 1);
    if (dry_run) {
      bind_range(st->count_states, lo, hi, before_ms, campaign_id);
      auto ok = tally(st->count_states, true, counts, emptied);
      st->count_states.reset();
      if (!ok) return fail(ok);
      continue;
    }
    if (auto ok = purge_range(db_, *st, lo, hi, before_ms, campaign_id, counts, emptied); !ok)
      return fail(ok);
  }
  if (dry_run) return counts;
  if (auto ok = drop_orphan_bodies(db_, emptied, counts); !ok) return fail(ok);
  return counts;
}

std::expected<std::optional<int64_t>, StorageError> QueueStore::purge_final_step(
    int64_t before_ms, int64_t from_id, int64_t batch, PurgeCounts& counts,
    std::set<int64_t>& pending_bodies) {
  if (!pending_bodies.empty()) {
    std::set<int64_t> now;
    while (!pending_bodies.empty() && now.size() < kBodiesPerTransaction)
      now.insert(pending_bodies.extract(pending_bodies.begin()));
    if (auto ok = drop_orphan_bodies(db_, now, counts); !ok) return fail(ok);
    return std::optional<int64_t>{from_id};
  }
  auto first =
      db_.prepare("SELECT id, created_at FROM recipient_rows WHERE id >= ?1 ORDER BY id LIMIT 1");
  if (!first) return fail(first);
  first->bind(1, from_id);
  auto row = first->step();
  if (!row) return fail(row);
  if (!*row || first->column_int(1) >= before_ms) return std::optional<int64_t>{};
  const int64_t lo = first->column_int(0);
  first->reset();
  auto last = db_.query_int("SELECT max(id) FROM recipient_rows");
  if (!last) return fail(last);
  // The newest recipient stays: SQLite gives a new row the largest id plus one, so a
  // purged newest id would be given again, and the outcome log's ids would repeat.
  const int64_t hi = std::min(last->value_or(0) - 1, lo + batch - 1);
  if (hi < lo) return std::optional<int64_t>{};
  auto st = prepare_purge(db_);
  if (!st) return fail(st);
  if (auto ok = purge_range(db_, *st, lo, hi, before_ms, std::nullopt, counts, pending_bodies); !ok)
    return fail(ok);
  return std::optional<int64_t>{hi + 1};
}

}  // namespace ringmail::storage

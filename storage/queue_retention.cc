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

void bind_range(Statement& st, int64_t lo, int64_t hi, int64_t before_ms,
                std::optional<int64_t> campaign_id) {
  st.bind(1, lo).bind(2, hi).bind(3, before_ms);
  if (campaign_id) {
    st.bind(4, *campaign_id);
  } else {
    st.bind_null(4);
  }
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
  auto bounds = db_.prepare("SELECT min(id), max(id) FROM recipients");
  if (!bounds) return fail(bounds);
  auto row = bounds->step();
  if (!row) return fail(row);
  if (!*row || bounds->column_is_null(0)) return counts;
  const int64_t first = bounds->column_int(0);
  const int64_t last = bounds->column_int(1);
  bounds->reset();

  if (auto ok = db_.exec("CREATE TEMP TABLE IF NOT EXISTS purge_messages(id INTEGER PRIMARY KEY)");
      !ok)
    return fail(ok);
  if (auto ok = db_.exec("DELETE FROM temp.purge_messages"); !ok) return fail(ok);
  if (campaign_id) {
    auto list = db_.prepare(
        "INSERT INTO temp.purge_messages SELECT id FROM messages WHERE campaign_id = ?1");
    if (!list) return fail(list);
    list->bind(1, *campaign_id);
    if (auto ok = list->run(); !ok) return fail(ok);
  }

  // dry run: the states of what would go. Otherwise the attempt log first (it refers to
  // the recipients by id), then the recipients, returning their states and messages.
  auto count_states = db_.prepare(
      fmt::format("SELECT state, count(*) FROM recipients WHERE {} GROUP BY state", kPurgeable));
  if (!count_states) return fail(count_states);
  auto drop_attempts = db_.prepare(
      fmt::format("DELETE FROM attempts WHERE recipient_id IN (SELECT id FROM recipients WHERE {})",
                  kPurgeable));
  if (!drop_attempts) return fail(drop_attempts);
  auto drop_recipients = db_.prepare(
      fmt::format("DELETE FROM recipients WHERE {} RETURNING state, message_id", kPurgeable));
  if (!drop_recipients) return fail(drop_recipients);

  std::set<int64_t> emptied_messages;  // messages that lost recipients: bodies to check
  auto tally = [&](Statement& st, bool grouped) -> std::expected<void, StorageError> {
    while (true) {
      auto r = st.step();
      if (!r) return fail(r);
      if (!*r) return {};
      auto state = parse_state(st.column_text(0));
      if (state) counts.recipients[*state] += grouped ? uint64_t(st.column_int(1)) : 1;
      if (!grouped) emptied_messages.insert(st.column_int(1));
    }
  };

  // One transaction per `batch` ids: a `run` on the same database gets the write lock
  // between them, and an interrupted purge has removed whole batches, nothing half.
  for (int64_t lo = first; lo <= last; lo += batch) {
    const int64_t hi = std::min(last, lo + batch - 1);
    if (dry_run) {
      bind_range(*count_states, lo, hi, before_ms, campaign_id);
      auto ok = tally(*count_states, true);
      count_states->reset();
      if (!ok) return fail(ok);
      continue;
    }
    if (auto ok = db_.begin(); !ok) return fail(ok);
    auto work = [&]() -> std::expected<void, StorageError> {
      bind_range(*drop_attempts, lo, hi, before_ms, campaign_id);
      auto dropped = drop_attempts->run();
      drop_attempts->reset();
      if (!dropped) return fail(dropped);
      counts.attempts += uint64_t(db_.changes());
      bind_range(*drop_recipients, lo, hi, before_ms, campaign_id);
      auto ok = tally(*drop_recipients, false);
      drop_recipients->reset();
      if (!ok) return ok;
      return db_.commit();
    };
    if (auto ok = work(); !ok) {
      db_.rollback();
      return fail(ok);
    }
  }
  if (dry_run) return counts;

  // A message whose every recipient is gone keeps its row, so its idempotency key still
  // refuses a second enqueue, but not its body. Only messages that lost recipients here
  // are looked at, by id, a few per transaction: freeing a body frees its overflow pages,
  // and all of them in one transaction would hold the write lock (and grow the WAL) for
  // as long as the bodies are big.
  constexpr size_t kMessagesPerTransaction = 64;
  auto drop_body = db_.prepare(
      "UPDATE messages SET body = X'' WHERE id = ?1 AND length(body) > 0 AND NOT EXISTS "
      "(SELECT 1 FROM recipients WHERE message_id = ?1)");
  if (!drop_body) return fail(drop_body);
  auto next = emptied_messages.begin();
  while (next != emptied_messages.end()) {
    if (auto ok = db_.begin(); !ok) return fail(ok);
    auto work = [&]() -> std::expected<void, StorageError> {
      for (size_t n = 0; n < kMessagesPerTransaction && next != emptied_messages.end();
           ++n, ++next) {
        drop_body->bind(1, *next);
        auto ok = drop_body->run();
        drop_body->reset();
        if (!ok) return fail(ok);
        counts.bodies += uint64_t(db_.changes());
      }
      return db_.commit();
    };
    if (auto ok = work(); !ok) {
      db_.rollback();
      return fail(ok);
    }
  }
  return counts;
}

}  // namespace ringmail::storage

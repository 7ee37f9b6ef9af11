// QueueStore's retention: removing recipients whose outcome is final and old enough
// (`ringmail purge`), so a database that serves for months stays the size of its recent
// work and the scans of a run's start stay short.
#include <fmt/format.h>

#include <algorithm>

#include "storage/queue_store.h"
#include "storage/queue_store_internal.h"

namespace ringmail::storage {

using queue_store_internal::fail;

namespace {

// The rows a purge removes; ?1 ?2 the id range, ?3 the cut-off, ?4 the campaign id or NULL.
// Only final states: a queued, deferred or in-flight recipient is never touched.
constexpr std::string_view kPurgeable =
    "id BETWEEN ?1 AND ?2 AND state IN ('delivered', 'bounced', 'expired', 'suppressed') "
    "AND updated_at < ?3 AND (?4 IS NULL OR message_id IN "
    "(SELECT id FROM messages WHERE campaign_id = ?4))";

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

std::expected<std::optional<int64_t>, StorageError> QueueStore::campaign_id(
    std::string_view name) {
  auto st = db_.prepare("SELECT id FROM campaigns WHERE name = ?1");
  if (!st) return fail(st);
  st->bind(1, name);
  auto row = st->step();
  if (!row) return fail(row);
  if (!*row) return std::optional<int64_t>{};
  return std::optional<int64_t>{st->column_int(0)};
}

std::expected<PurgeCounts, StorageError> QueueStore::purge_final(
    int64_t before_ms, std::optional<int64_t> campaign_id, bool dry_run, int64_t batch) {
  PurgeCounts counts;
  auto bounds = db_.prepare("SELECT min(id), max(id) FROM recipients");
  if (!bounds) return fail(bounds);
  auto row = bounds->step();
  if (!row) return fail(row);
  if (!*row || bounds->column_is_null(0)) return counts;
  const int64_t first = bounds->column_int(0);
  const int64_t last = bounds->column_int(1);
  bounds->reset();

  // dry run: the states of what would go. Otherwise the attempt log first (it refers to
  // the recipients by id), then the recipients, returning their states.
  auto count_states = db_.prepare(
      fmt::format("SELECT state, count(*) FROM recipients WHERE {} GROUP BY state", kPurgeable));
  if (!count_states) return fail(count_states);
  auto drop_attempts = db_.prepare(fmt::format(
      "DELETE FROM attempts WHERE recipient_id IN (SELECT id FROM recipients WHERE {})",
      kPurgeable));
  if (!drop_attempts) return fail(drop_attempts);
  auto drop_recipients =
      db_.prepare(fmt::format("DELETE FROM recipients WHERE {} RETURNING state", kPurgeable));
  if (!drop_recipients) return fail(drop_recipients);

  auto tally = [&](Statement& st, bool grouped) -> std::expected<void, StorageError> {
    while (true) {
      auto r = st.step();
      if (!r) return fail(r);
      if (!*r) return {};
      auto state = parse_state(st.column_text(0));
      if (state) counts.recipients[*state] += grouped ? uint64_t(st.column_int(1)) : 1;
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
  // refuses a second enqueue, but not its body.
  if (auto ok = db_.begin(); !ok) return fail(ok);
  auto bodies = db_.prepare(
      "UPDATE messages SET body = X'' WHERE length(body) > 0 AND (?1 IS NULL OR campaign_id = "
      "?1) AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = messages.id)");
  if (!bodies) {
    db_.rollback();
    return fail(bodies);
  }
  if (campaign_id) {
    bodies->bind(1, *campaign_id);
  } else {
    bodies->bind_null(1);
  }
  if (auto ok = bodies->run(); !ok) {
    db_.rollback();
    return fail(ok);
  }
  counts.bodies = uint64_t(db_.changes());
  if (auto ok = db_.commit(); !ok) {
    db_.rollback();
    return fail(ok);
  }
  return counts;
}

}  // namespace ringmail::storage

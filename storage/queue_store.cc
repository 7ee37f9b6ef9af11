// QueueStore's opening, enqueue, the suppressions of a run's start, and the storage
// thread's work (claim, apply outcomes, release). Runs and leases are in queue_runs.cc,
// pending rows in queue_pending.cc, reports in queue_reports.cc, the suppression list in
// queue_suppressions.cc.
#include "storage/queue_store.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "storage/queue_store_internal.h"
#include "storage/schema.h"

namespace ringmail::storage {

using queue_store_internal::fail;
using queue_store_internal::kPendingWaits;
using queue_store_internal::lower;
using queue_store_internal::Status;

namespace {

// Calls fn(lo, hi) for each run of consecutive ids in `sorted` (ascending), so a set of
// ids becomes a few `id BETWEEN lo AND hi` range statements: the ids of one claim, and of
// one transaction, are mostly consecutive rowids.
template <typename Fn>
Status for_each_id_run(std::span<const int64_t> sorted, Fn&& fn) {
  size_t i = 0;
  while (i < sorted.size()) {
    size_t j = i;
    // Out-of-order input still comes out right, as more (shorter) runs.
    while (j + 1 < sorted.size() && sorted[j + 1] >= sorted[j] && sorted[j + 1] <= sorted[j] + 1)
      ++j;
    if (auto ok = fn(sorted[i], sorted[j]); !ok) return ok;
    i = j + 1;
  }
  return {};
}

}  // namespace

std::optional<int64_t> unsent_due_at(const RecipientUpdate& u, const RetrySchedule& schedule,
                                     int64_t now_ms) {
  if (!u.not_attempted) return std::nullopt;
  AttemptFacts facts;
  facts.status = u.status;
  facts.reply = u.reply;
  facts.not_attempted = true;
  facts.retry_after_ms = u.retry_after_ms;
  facts.about_recipient = u.about_recipient;
  facts.now_ms = now_ms;
  // The two ways back unsent depend on neither the attempts nor the age nor the jitter.
  const PolicyDecision d = decide(facts, schedule, 0.0);
  if (d.state != RecipientState::kQueued || d.counts_attempt) return std::nullopt;
  return d.next_attempt_at_ms > 0 ? d.next_attempt_at_ms : now_ms;
}

int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

// The process's umask, read without changing it (umask(2) would, for every thread).
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("Umask:")) return mode_t(std::strtoul(line.c_str() + 6, nullptr, 8));
  return 022;
}

}  // namespace

std::expected<QueueStore, StorageError> QueueStore::open(const StorageOptions& options,
                                                         OpenMode mode) {
  std::error_code ignored;
  const bool creating =
      mode == OpenMode::kReadWriteCreate && !std::filesystem::exists(options.path, ignored);
  auto db = Connection::open(options.path, mode,
                             options.synchronous == Synchronous::kFull ? "FULL" : "NORMAL");
  if (!db) return fail(db);
  // SQLite creates the file 0644 whatever the umask allows; a new file's mode is the
  // umask's word instead, as for any file, so a group that shares the database (the
  // systemd unit's UMask=0007) can write it. Before migrate(): the -wal and -shm files the
  // switch to WAL creates take the database's mode.
  if (creating) (void)::chmod(options.path.c_str(), 0666 & ~current_umask());
  if (mode != OpenMode::kReadOnly) {
    if (auto ok = migrate(*db); !ok) return fail(ok);
  } else {
    auto v = schema_version(*db);
    if (!v) return fail(v);
    if (*v != current_schema_version())
      return std::unexpected(
          StorageError{0, fmt::format("{}: schema version {} (expected {})", options.path, *v,
                                      current_schema_version())});
  }
  return QueueStore(std::move(*db));
}

std::expected<Statement*, StorageError> QueueStore::cached(Statement& slot, std::string_view sql) {
  if (!slot) {
    auto st = db_.prepare(sql);
    if (!st) return fail(st);
    slot = std::move(*st);
  }
  return &slot;
}

// ---------------------------------------------------------------- enqueue

std::expected<EnqueueCounts, StorageError> QueueStore::begin_enqueue(const EnqueueRequest& request,
                                                                     int64_t now_ms) {
  if (auto ok = db_.begin(); !ok) return fail(ok);
  auto rollback_on_error = [&](StorageError e) {
    db_.rollback();
    return std::unexpected(std::move(e));
  };
  EnqueueCounts counts;
  if (request.idempotency_key) {
    auto st = db_.prepare("SELECT id FROM messages WHERE idempotency_key = ?1");
    if (!st) return rollback_on_error(st.error());
    st->bind(1, *request.idempotency_key);
    auto row = st->step();
    if (!row) return rollback_on_error(row.error());
    if (*row) {
      counts.message_id = st->column_int(0);
      counts.duplicate = true;
      return counts;
    }
  }
  auto campaign = db_.prepare(
      "INSERT INTO campaigns(name, created_at) VALUES (?1, ?2) "
      "ON CONFLICT(name) DO UPDATE SET name = excluded.name RETURNING id");
  if (!campaign) return rollback_on_error(campaign.error());
  campaign->bind(1, request.campaign).bind(2, now_ms);
  auto row = campaign->step();
  if (!row) return rollback_on_error(row.error());
  const int64_t campaign_id = campaign->column_int(0);
  campaign->reset();

  auto message = db_.prepare(
      "INSERT INTO messages(campaign_id, idempotency_key, sender, body, send_at, created_at) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (!message) return rollback_on_error(message.error());
  message->bind(1, campaign_id);
  if (request.idempotency_key) {
    message->bind(2, *request.idempotency_key);
  } else {
    message->bind_null(2);
  }
  message->bind(3, request.sender).bind_blob(4, request.encoded_body);
  message->bind(5, request.send_at_ms).bind(6, now_ms);
  if (auto ok = message->run(); !ok) return rollback_on_error(ok.error());
  counts.message_id = sqlite3_last_insert_rowid(db_.raw());
  counts.urgent = request.urgent;

  auto any = db_.query_int("SELECT EXISTS (SELECT 1 FROM suppressions)");
  if (!any) return rollback_on_error(any.error());
  check_suppressions_ = any->value_or(0) != 0;
  return counts;
}

std::expected<void, StorageError> QueueStore::add_recipient(EnqueueCounts& counts,
                                                            std::string_view address,
                                                            std::string_view domain,
                                                            int64_t due_at_ms, int64_t now_ms) {
  RecipientState state = RecipientState::kQueued;
  if (check_suppressions_) {
    auto st = cached(find_suppressed_, "SELECT 1 FROM suppressions WHERE address = ?1");
    if (!st) return fail(st);
    (*st)->bind(1, lower(address));
    auto row = (*st)->step();
    (*st)->reset();
    if (!row) return fail(row);
    if (*row) state = RecipientState::kSuppressed;
  }
  // first_due_at, from which max_age counts, is when the recipient entered the queue due:
  // a --send-at in the past is due now, and counting from that past moment would expire a
  // recipient on its first 4xx (Postfix counts maximal_queue_lifetime from arrival).
  // A bulk recipient is stored pending, listed in an unclaimed range (queue_pending.cc);
  // an urgent one is an ordinary queued row, claimed through urgent_due and the due index.
  const bool pending = state == RecipientState::kQueued && !counts.urgent;
  auto st = cached(insert_recipient_,
                   "INSERT INTO recipient_rows(message_id, address, domain, state, "
                   "next_attempt_at, first_due_at, created_at, updated_at) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, max(?5, ?6), ?6, ?6)");
  if (!st) return fail(st);
  (*st)->bind(1, counts.message_id).bind_static(2, address).bind_static(3, domain);
  (*st)->bind_static(4, pending ? std::string_view("pending") : to_string(state));
  (*st)->bind(5, due_at_ms).bind(6, now_ms);
  if (auto ok = (*st)->run(); !ok) return ok;
  if (pending) {
    auto ok = add_pending_id(sqlite3_last_insert_rowid(db_.raw()), counts.message_id, due_at_ms);
    if (!ok) return ok;
  }
  if (counts.urgent && state == RecipientState::kQueued) {
    auto urgent = cached(insert_urgent_,
                         "INSERT INTO urgent_due(next_attempt_at, recipient_id) VALUES (?1, ?2)");
    if (!urgent) return fail(urgent);
    (*urgent)->bind(1, due_at_ms).bind(2, sqlite3_last_insert_rowid(db_.raw()));
    if (auto ok = (*urgent)->run(); !ok) return ok;
  }
  ++(state == RecipientState::kQueued ? counts.queued : counts.suppressed);
  return {};
}

std::expected<void, StorageError> QueueStore::finish_enqueue() {
  auto ok = close_enqueue_range();
  if (ok) ok = db_.commit();
  if (!ok) db_.rollback();
  return ok;
}

std::expected<uint64_t, StorageError> QueueStore::apply_suppressions(int64_t now_ms) {
  auto any = db_.query_int("SELECT EXISTS (SELECT 1 FROM suppressions)");
  if (!any) return fail(any);
  if (any->value_or(0) == 0) return 0;
  // Pending rows too, unless a lease or a delivery holds them (queue_pending.cc): looked
  // up only for a suppressed address.
  auto st =
      db_.prepare(fmt::format("UPDATE recipient_rows SET state = 'suppressed', updated_at = ?1 "
                              "WHERE lower(address) IN (SELECT address FROM suppressions) "
                              "AND (state IN ('queued', 'deferred') OR (state = 'pending' AND {}))",
                              kPendingWaits));
  if (!st) return fail(st);
  st->bind(1, now_ms);
  if (auto ok = st->run(); !ok) return fail(ok);
  return static_cast<uint64_t>(db_.changes());
}

// ---------------------------------------------------------------- storage thread work

void QueueStore::tune_for_delivery() {
  // A checkpoint every 10,000 WAL pages (40 MB) instead of SQLite's 1,000: a recipient's
  // page is written by its claim and again by its outcome a few commits later, and a
  // checkpoint copies a page once however often the WAL holds it. Bench/storage: ~10-20%
  // more recipients/s. journal_size_limit then truncates the WAL after a checkpoint so the
  // file does not stay at its high-water mark. Neither changes what a commit guarantees.
  // Best effort: a failed PRAGMA leaves SQLite's defaults, which are correct too.
  const std::string directory = std::filesystem::path(db_.path()).parent_path().string();
  struct statvfs fs{};
  const uint64_t free_bytes =
      ::statvfs(directory.empty() ? "." : directory.c_str(), &fs) == 0
          ? uint64_t(fs.f_bavail) * fs.f_frsize
          : UINT64_MAX;  // unknown: as before
  const int pages = wal_autocheckpoint_pages(free_bytes);
  // Short of space, the WAL a failed run left behind is folded into the database first.
  if (pages < 10000) (void)db_.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  (void)db_.exec(fmt::format("PRAGMA wal_autocheckpoint={}", pages));
  (void)db_.exec("PRAGMA journal_size_limit=67108864");
  // A claim's lease UPDATE changes more pages than the statement journal keeps in memory
  // (64 KiB), so with file temp storage every claim created, wrote and unlinked a file in
  // /var/tmp: failed where no temp directory is writable (a read-only root file system),
  // and cost 4% of a durable run's wall time (farm-bench). This connection's statements
  // each change a bounded number of rows (claim_batch, commit_batch, a postponement's
  // chunk, a retention step), so the journal's memory is bounded too.
  (void)db_.exec("PRAGMA temp_store=MEMORY");
}

int wal_autocheckpoint_pages(uint64_t free_bytes) {
  // Four times the larger WAL: it can reach the interval before a checkpoint runs, the
  // checkpoint then writes as much into the database file, and the database grows too.
  constexpr uint64_t kRoom = 4 * 10000 * 4096ull;
  return free_bytes >= kRoom ? 10000 : 1000;
}

std::expected<std::vector<ClaimedRecipient>, StorageError> QueueStore::claim(
    int64_t owner, size_t limit, int64_t now_ms, int64_t lease_expires_ms) {
  // Read first, then lease by id ranges: cheaper than UPDATE ... WHERE id IN (subquery)
  // RETURNING, which builds two ephemeral tables per claim. Both run in the caller's
  // write transaction, so nothing changes the rows in between.
  // Scoped to one message, the due index is forced: by_message would find the message's
  // rows faster, but then sort all of them on every claim.
  std::vector<ClaimedRecipient> out;
  out.reserve(limit);
  // Urgent first recipients (`enqueue --urgent`), nearly always none: one lookup in a
  // small table. A `send` scoped to one message has no other work to be ahead of.
  if (!only_message_) {
    auto urgent = read_urgent(limit, now_ms, out);
    if (!urgent) return fail(urgent);
  }
  std::vector<int64_t> explicit_taken;  // ordinary rows to lease below
  for (const ClaimedRecipient& r : out) explicit_taken.push_back(r.id);
  if (out.size() < limit) {
    // Ordinary rows (retries, rows given back) from the due index, with their due times,
    // merged with the pending rows of unclaimed ranges (claim_merged).
    auto sel = only_message_
                   ? cached(select_due_of_message_,
                            "SELECT id, message_id, address, attempts, first_due_at, "
                            "next_attempt_at FROM recipient_rows INDEXED BY recipients_due "
                            "WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?1 "
                            "AND message_id = ?3 ORDER BY next_attempt_at LIMIT ?2")
                   : cached(select_due_,
                            "SELECT id, message_id, address, attempts, first_due_at, "
                            "next_attempt_at FROM recipient_rows INDEXED BY recipients_due "
                            "WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?1 "
                            "ORDER BY next_attempt_at LIMIT ?2");
    if (!sel) return fail(sel);
    Statement& s = **sel;
    const size_t urgent_count = out.size();
    // The urgent rows just read are due too, and this read may meet them again.
    s.bind(1, now_ms).bind(2, static_cast<int64_t>(limit));
    if (only_message_) s.bind(3, *only_message_);
    std::vector<std::pair<int64_t, ClaimedRecipient>> due;
    while (true) {
      auto row = s.step();
      if (!row) {
        s.reset();
        return fail(row);
      }
      if (!*row) break;
      const int64_t id = s.column_int(0);
      if (urgent_count > 0 &&
          std::any_of(out.begin(), out.begin() + ptrdiff_t(urgent_count),
                      [id](const ClaimedRecipient& c) { return c.id == id; }))
        continue;
      due.emplace_back(s.column_int(5), ClaimedRecipient{id, s.column_int(1), s.column_string(2),
                                                         s.column_int(3), s.column_int(4)});
    }
    s.reset();
    auto merged = claim_merged(owner, limit, now_ms, lease_expires_ms, due, out, explicit_taken);
    if (!merged) return fail(merged);
  }
  if (explicit_taken.empty()) return out;

  std::vector<int64_t>& ids = explicit_taken;
  std::sort(ids.begin(), ids.end());
  auto upd = cached(lease_range_,
                    "UPDATE recipient_rows NOT INDEXED SET state = 'in_flight', lease_owner = ?1, "
                    "lease_expires = ?2, updated_at = ?3 "
                    "WHERE id BETWEEN ?4 AND ?5 AND state IN ('queued', 'deferred')");
  if (!upd) return fail(upd);
  Statement& u = **upd;
  auto leased = for_each_id_run(ids, [&](int64_t lo, int64_t hi) -> Status {
    u.bind(1, owner).bind(2, lease_expires_ms).bind(3, now_ms).bind(4, lo).bind(5, hi);
    if (auto ok = u.run(); !ok) return ok;
    // Every id of the range was just read as due under the same write lock.
    if (db_.changes() != hi - lo + 1)
      return std::unexpected(
          StorageError{0, fmt::format("{}: claim of recipients {}..{} leased {} rows", db_.path(),
                                      lo, hi, db_.changes())});
    return {};
  });
  if (!leased) return fail(leased);
  return out;
}

std::expected<StoredMessage, StorageError> QueueStore::load_message(int64_t message_id) {
  auto st = cached(load_message_, "SELECT sender, body FROM messages WHERE id = ?1");
  if (!st) return fail(st);
  Statement& s = **st;
  s.bind(1, message_id);
  auto row = s.step();
  if (!row) return fail(row);
  if (!*row) {
    s.reset();
    return std::unexpected(
        StorageError{0, fmt::format("{}: message {} is missing", db_.path(), message_id)});
  }
  StoredMessage m{s.column_string(0), s.column_string(1)};
  s.reset();
  return m;
}

std::expected<RecipientState, StorageError> QueueStore::apply(int64_t owner,
                                                              const RecipientUpdate& u,
                                                              const RetrySchedule& schedule,
                                                              int64_t now_ms,
                                                              AppliedOutcome* applied) {
  const std::string enhanced = u.reply.enhanced.to_string();
  auto log_attempt = [&](RecipientState state) -> Status {
    auto st = cached(insert_attempt_,
                     "INSERT INTO attempts(recipient_id, at, result, code, enhanced, text) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!st) return fail(st);
    (*st)->bind(1, u.recipient_id).bind(2, now_ms).bind_static(3, to_string(state));
    (*st)->bind(4, u.reply.code).bind_static(5, enhanced).bind_static(6, u.reply.text);
    return (*st)->run();
  };

  // The common case needs no read: a 2xx to the end of data.
  if (!u.not_attempted && u.status == smtp::RecipientStatus::kDelivered) {
    const int64_t id = u.recipient_id;
    if (auto ok = apply_delivered(owner, std::span(&id, 1), u.reply, now_ms); !ok) return fail(ok);
    return RecipientState::kDelivered;
  }

  // A pending row given back unsent goes back to an unclaimed range; for any other
  // outcome it becomes an ordinary in-flight row first: the outcome writes the row.
  if (auto due = unsent_due_at(u, schedule, now_ms)) {
    std::vector<GiveBack> one{{u.recipient_id, *due, false, false, u.retry_after_ms > 0, {}}};
    if (auto ok = give_back_pending(owner, one, applied != nullptr); !ok) return fail(ok);
    if (one[0].handled) {
      if (!one[0].ours) return RecipientState::kInFlight;  // not ours any more
      if (applied) {
        applied->address = std::move(one[0].address);
        applied->attempts = 0;
        applied->next_attempt_at_ms = one[0].due_ms;
      }
      return RecipientState::kQueued;
    }
  }
  if (auto ok = materialize(owner, std::span(&u.recipient_id, 1)); !ok) return fail(ok);
  auto rd = cached(read_for_policy_,
                   "SELECT attempts, first_due_at, address, domain FROM recipient_rows "
                   "WHERE id = ?1 AND state = 'in_flight' AND lease_owner = ?2");
  if (!rd) return fail(rd);
  Statement& r = **rd;
  r.bind(1, u.recipient_id).bind(2, owner);
  auto row = r.step();
  if (!row) return fail(row);
  if (!*row) {  // not ours any more
    r.reset();
    return RecipientState::kInFlight;
  }
  AttemptFacts facts;
  facts.status = u.status;
  facts.reply = u.reply;
  facts.not_attempted = u.not_attempted;
  facts.retry_after_ms = u.retry_after_ms;
  facts.about_recipient = u.about_recipient;
  facts.attempts_before = static_cast<unsigned>(r.column_int(0));
  facts.first_due_at_ms = r.column_int(1);
  facts.now_ms = now_ms;
  const std::string address = r.column_string(2);
  // A recipient of a paused destination waits at least for the pause's end, whatever its
  // own backoff, so the next run does not claim it only to defer it again.
  const Postponed* postponed = nullptr;
  if (!postponed_.empty()) {
    auto it = postponed_.find(std::string(r.column_text(3)));
    if (it != postponed_.end()) {
      if (it->second.until_ms > now_ms) {
        postponed = &it->second;
      } else {
        postponed_.erase(it);  // that pause is over, whether or not "up" was reported
      }
    }
  }
  r.reset();

  const double unit = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  PolicyDecision d = decide(facts, schedule, unit);
  if (postponed && (d.state == RecipientState::kDeferred ||
                    (d.state == RecipientState::kQueued && facts.retry_after_ms > 0)))
    d.next_attempt_at_ms = std::max(d.next_attempt_at_ms, postponed->until_ms);

  auto st = cached(update_after_attempt_,
                   "UPDATE recipient_rows SET state = ?2, attempts = attempts + ?3, "
                   "next_attempt_at = CASE WHEN ?4 > 0 THEN ?4 ELSE next_attempt_at END, "
                   "last_code = CASE WHEN ?3 > 0 THEN ?5 ELSE last_code END, "
                   "last_enhanced = CASE WHEN ?3 > 0 THEN ?6 ELSE last_enhanced END, "
                   "last_text = CASE WHEN ?3 > 0 THEN ?7 ELSE last_text END, "
                   "lease_owner = NULL, lease_expires = NULL, updated_at = ?8 WHERE id = ?1");
  if (!st) return fail(st);
  (*st)->bind(1, u.recipient_id).bind_static(2, to_string(d.state));
  (*st)->bind(3, d.counts_attempt ? 1 : 0).bind(4, d.next_attempt_at_ms).bind(5, u.reply.code);
  (*st)->bind_static(6, enhanced).bind_static(7, u.reply.text).bind(8, now_ms);
  if (auto ok = (*st)->run(); !ok) return fail(ok);
  if (d.counts_attempt) {
    if (auto ok = log_attempt(d.state); !ok) return fail(ok);
  }
  if (d.suppress_address) {
    auto ok = suppress(address, u.reply.to_string(), now_ms);
    if (!ok) return fail(ok);
  }
  if (applied) {
    applied->attempts = facts.attempts_before + (d.counts_attempt ? 1 : 0);
    applied->next_attempt_at_ms = d.next_attempt_at_ms;
    applied->suppressed = d.suppress_address;
    applied->address = address;
  }
  return d.state;
}

std::expected<uint64_t, StorageError> QueueStore::apply_delivered(
    int64_t owner, std::span<const int64_t> sorted_ids, const smtp::Reply& reply, int64_t now_ms,
    const FirstAttempts& first_attempts) {
  // Pending rows of this process's claims: a deliveries range each, no row written.
  std::vector<int64_t> pending;
  std::vector<int64_t> ordinary;
  split_pending(sorted_ids, pending, ordinary);
  uint64_t delivered = 0;
  if (!pending.empty()) {
    auto n = deliver_pending(owner, pending, reply, now_ms);
    if (!n) return fail(n);
    delivered += *n;
    if (ordinary.empty()) return delivered;
    sorted_ids = ordinary;
  }
  const std::string enhanced = reply.enhanced.to_string();
  // Before the update, while the rows still say in_flight under this owner: a redelivery
  // (attempts > 0: deferred before, or recovered after a crash) is logged; a first-try
  // delivery is not (see apply_delivered in queue_store.h).
  auto log = cached(log_redelivered_,
                    "INSERT INTO attempts(recipient_id, at, result, code, enhanced, text) "
                    "SELECT id, ?4, 'delivered', ?5, ?6, ?7 FROM recipient_rows NOT INDEXED "
                    "WHERE id BETWEEN ?1 AND ?2 AND state = 'in_flight' AND lease_owner = ?3 "
                    "AND attempts > 0");
  if (!log) return fail(log);
  auto upd = cached(deliver_range_,
                    "UPDATE recipient_rows NOT INDEXED SET state = 'delivered', "
                    "attempts = attempts + 1, "
                    "last_code = ?4, last_enhanced = ?5, last_text = ?6, lease_owner = NULL, "
                    "lease_expires = NULL, updated_at = ?7 "
                    "WHERE id BETWEEN ?1 AND ?2 AND state = 'in_flight' AND lease_owner = ?3");
  if (!upd) return fail(upd);
  Statement& l = **log;
  Statement& d = **upd;
  auto ok = for_each_id_run(sorted_ids, [&](int64_t lo, int64_t hi) -> Status {
    if (!first_attempts || !first_attempts(lo, hi)) {
      l.bind(1, lo).bind(2, hi).bind(3, owner).bind(4, now_ms).bind(5, reply.code);
      l.bind_static(6, enhanced).bind_static(7, reply.text);
      if (auto ok = l.run(); !ok) return ok;
    }
    d.bind(1, lo).bind(2, hi).bind(3, owner).bind(4, reply.code).bind_static(5, enhanced);
    d.bind_static(6, reply.text).bind(7, now_ms);
    if (auto ok = d.run(); !ok) return ok;
    delivered += static_cast<uint64_t>(db_.changes());
    return {};
  });
  if (!ok) return fail(ok);
  return delivered;
}

std::expected<void, StorageError> QueueStore::release(int64_t owner, int64_t recipient_id,
                                                      int64_t now_ms) {
  return release(owner, std::span(&recipient_id, 1), now_ms);
}

std::expected<void, StorageError> QueueStore::release(int64_t owner,
                                                      std::span<const int64_t> sorted_ids,
                                                      int64_t now_ms) {
  // Pending rows go back to unclaimed ranges, due now; the others are rows written back.
  std::vector<GiveBack> items;
  items.reserve(sorted_ids.size());
  for (int64_t id : sorted_ids) items.push_back({id, now_ms, false, false, false, {}});
  if (auto ok = give_back_pending(owner, items, false); !ok) return fail(ok);
  std::vector<int64_t> ordinary;
  for (const GiveBack& item : items)
    if (!item.handled) ordinary.push_back(item.id);
  sorted_ids = ordinary;
  auto st = cached(release_range_,
                   "UPDATE recipient_rows NOT INDEXED SET state = 'queued', lease_owner = NULL, "
                   "lease_expires = NULL, updated_at = ?4 "
                   "WHERE id BETWEEN ?1 AND ?2 AND state = 'in_flight' AND lease_owner = ?3");
  if (!st) return fail(st);
  Statement& s = **st;
  return for_each_id_run(sorted_ids, [&](int64_t lo, int64_t hi) -> Status {
    s.bind(1, lo).bind(2, hi).bind(3, owner).bind(4, now_ms);
    return s.run();
  });
}

std::expected<std::optional<int64_t>, StorageError> QueueStore::next_due_at() {
  // Ordinary rows through the due index, pending ones through their unclaimed ranges.
  auto st = only_message_
                ? cached(next_due_of_message_,
                         "SELECT min(due) FROM (SELECT min(next_attempt_at) AS due "
                         "FROM recipient_rows INDEXED BY recipients_due WHERE message_id = ?1 AND "
                         "state IN ('queued', 'deferred') UNION ALL "
                         "SELECT min(due_at) FROM unclaimed WHERE message_id = ?1)")
                : cached(next_due_,
                         "SELECT min(due) FROM (SELECT min(next_attempt_at) AS due "
                         "FROM recipient_rows INDEXED BY recipients_due "
                         "WHERE state IN ('queued', 'deferred') UNION ALL "
                         "SELECT min(due_at) FROM unclaimed)");
  if (!st) return fail(st);
  Statement& s = **st;
  if (only_message_) s.bind(1, *only_message_);
  auto row = s.step();
  if (!row) return fail(row);
  std::optional<int64_t> out;
  if (*row && !s.column_is_null(0)) out = s.column_int(0);
  s.reset();
  return out;
}

}  // namespace ringmail::storage

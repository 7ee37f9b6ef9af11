// QueueStore's runs and leases: a run's registration, the leases of dead runs (or expired
// ones) taken back, and the count of those other runs still hold.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "storage/queue_store.h"
#include "storage/queue_store_internal.h"

namespace ringmail::storage {

using queue_store_internal::fail;
using queue_store_internal::kLeasedPendingRow;

namespace {

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

// Field 22 of /proc/PID/stat (start time in clock ticks since boot): with the pid it
// names one process, so a pid reused by another process does not look alive.
std::optional<int64_t> process_start_time(int64_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), {});
  size_t close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return std::nullopt;
  }
  try {
    return std::stoll(field);
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace

std::expected<int64_t, StorageError> QueueStore::register_run(int64_t now_ms) {
  std::uniform_int_distribution<int64_t> dist(1, INT64_MAX);
  const int64_t owner = dist(rng_);
  auto st = db_.prepare(
      "INSERT INTO runs(owner, pid, host, proc_start, started_at) VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!st) return fail(st);
  st->bind(1, owner).bind(2, static_cast<int64_t>(getpid())).bind(3, host_name());
  st->bind(4, process_start_time(getpid()).value_or(0)).bind(5, now_ms);
  if (auto ok = st->run(); !ok) return fail(ok);
  return owner;
}

std::expected<void, StorageError> QueueStore::unregister_run(int64_t owner) {
  // Leases of pending rows still held (outcomes that never came: a failed run) go back to
  // unclaimed ranges now rather than at the next run's recovery.
  const std::string me = fmt::format("[{}]", owner);
  if (auto ok = db_.begin(); !ok) return fail(ok);
  auto requeued =
      requeue_leases("owner IN (SELECT value FROM json_each(?2))", unix_now_ms(), me, "");
  if (!requeued) {
    db_.rollback();
    return fail(requeued);
  }
  auto st = db_.prepare("DELETE FROM runs WHERE owner = ?1");
  if (!st) {
    db_.rollback();
    return fail(st);
  }
  st->bind(1, owner);
  auto ok = st->run();
  if (ok) ok = db_.commit();
  if (!ok) db_.rollback();
  return ok;
}

std::expected<QueueStore::ForeignLeases, StorageError> QueueStore::leased_by_other_runs(
    int64_t owner) {
  // In-flight rows of their own (through recipients_by_state, schema.cc version 5: its
  // WHERE repeated, or SQLite does not see that the index holds them) and
  // the leases of pending rows: those not delivered yet.
  auto st = db_.prepare(
      fmt::format("SELECT count(*), min(lease_expires) FROM recipient_rows "
                  "WHERE state = 'in_flight' AND state <> 'pending' AND lease_owner IS NOT ?1 "
                  "UNION ALL "
                  "SELECT count(*), min(l.expires) FROM leases l CROSS JOIN recipient_rows r "
                  "ON r.id BETWEEN l.lo AND l.hi WHERE l.owner IS NOT ?1 AND {}",
                  kLeasedPendingRow));
  if (!st) return fail(st);
  st->bind(1, owner);
  ForeignLeases out;
  while (true) {
    auto row = st->step();
    if (!row) return fail(row);
    if (!*row) break;
    out.recipients += static_cast<uint64_t>(st->column_int(0));
    if (!st->column_is_null(1) &&
        (out.first_expiry_ms == 0 || st->column_int(1) < out.first_expiry_ms))
      out.first_expiry_ms = st->column_int(1);
  }
  st->reset();
  return out;
}

std::expected<uint64_t, StorageError> QueueStore::recover_leases(int64_t now_ms,
                                                                 bool only_dead_runs) {
  // The runs of this host, dead or alive, read before the write lock is taken: a run
  // found dead stays dead (its process start time is checked, not just its pid).
  std::vector<int64_t> dead;
  std::vector<int64_t> alive_here;
  {
    auto st = db_.prepare("SELECT owner, pid, host, proc_start FROM runs");
    if (!st) return fail(st);
    const std::string me = host_name();
    while (true) {
      auto row = st->step();
      if (!row) return fail(row);
      if (!*row) break;
      if (st->column_text(2) != me) continue;  // another host: only lease expiry applies
      const auto pid = static_cast<pid_t>(st->column_int(1));
      auto start = process_start_time(pid);
      if (start && *start == st->column_int(3)) {
        alive_here.push_back(st->column_int(0));
      } else if (start || (::kill(pid, 0) != 0 && errno == ESRCH)) {
        dead.push_back(st->column_int(0));  // another process has the pid, or none does
      }
      // Otherwise the pid exists but its start time cannot be read (/proc hidden from
      // this user: the unit's ProtectProc=invisible, another PID namespace): alive or not,
      // it cannot be told, so only lease expiry applies, as for another host.
    }
  }
  if (only_dead_runs && dead.empty()) return 0;
  const std::string dead_json = fmt::format("[{}]", fmt::join(dead, ","));
  const std::string alive_json = fmt::format("[{}]", fmt::join(alive_here, ","));
  if (auto ok = db_.begin(); !ok) return fail(ok);
  auto body = [&]() -> std::expected<uint64_t, StorageError> {
    // In-flight rows through recipients_by_state (schema.cc, version 5; `state <>
    // 'pending'` lets SQLite see that the partial index holds them). A live run of
    // this host keeps its leases even once they expired: it still holds that work and
    // will send it, so queueing it again would send it twice.
    auto requeue = db_.prepare(
        only_dead_runs
            ? "UPDATE recipient_rows SET state = 'queued', lease_owner = NULL, lease_expires = "
              "NULL, updated_at = ?1 WHERE state = 'in_flight' AND state <> 'pending' AND "
              "lease_owner IN (SELECT value FROM json_each(?2))"
            : "UPDATE recipient_rows SET state = 'queued', lease_owner = NULL, lease_expires = "
              "NULL, updated_at = ?1 WHERE state = 'in_flight' AND state <> 'pending' AND "
              "((lease_expires < ?1 AND "
              "lease_owner NOT IN (SELECT value FROM json_each(?3))) OR lease_owner IS NULL OR "
              "lease_owner NOT IN (SELECT owner FROM runs) OR lease_owner IN (SELECT value "
              "FROM json_each(?2)))");
    auto forget = db_.prepare("DELETE FROM runs WHERE owner = ?1");
    if (!requeue) return fail(requeue);
    if (!forget) return fail(forget);
    requeue->bind(1, now_ms).bind_static(2, dead_json);
    if (!only_dead_runs) requeue->bind_static(3, alive_json);
    if (auto ok = requeue->run(); !ok) return fail(ok);
    uint64_t recovered = static_cast<uint64_t>(db_.changes());
    // The same for leases of pending rows: their ranges become unclaimed again.
    auto ranges = requeue_leases(
        only_dead_runs ? "owner IN (SELECT value FROM json_each(?2))"
                       : "(expires < ?1 AND owner NOT IN (SELECT value FROM json_each(?3))) OR "
                         "owner NOT IN (SELECT owner FROM runs) OR "
                         "owner IN (SELECT value FROM json_each(?2))",
        now_ms, dead_json, only_dead_runs ? "" : alive_json);
    if (!ranges) return fail(ranges);
    recovered += *ranges;
    for (int64_t owner : dead) {
      forget->bind(1, owner);
      if (auto ok = forget->run(); !ok) return fail(ok);
    }
    return recovered;
  };
  auto result = body();
  if (!result) {
    db_.rollback();
    return result;
  }
  if (auto ok = db_.commit(); !ok) {
    db_.rollback();
    return fail(ok);
  }
  return result;
}

}  // namespace ringmail::storage

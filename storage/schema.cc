#include "storage/schema.h"

#include <fmt/format.h>

#include <array>
#include <string_view>

namespace ringmail::storage {
namespace {

// Times are Unix milliseconds (UTC). States are the words of recipient_state.h.
constexpr std::string_view kMigration1 = R"sql(
CREATE TABLE campaigns (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  created_at  INTEGER NOT NULL
);
CREATE TABLE messages (
  id               INTEGER PRIMARY KEY,
  campaign_id      INTEGER NOT NULL REFERENCES campaigns(id),
  idempotency_key  TEXT UNIQUE,
  sender           TEXT NOT NULL,
  body             BLOB NOT NULL,
  send_at          INTEGER NOT NULL,
  created_at       INTEGER NOT NULL
);
CREATE TABLE recipients (
  id               INTEGER PRIMARY KEY,
  message_id       INTEGER NOT NULL REFERENCES messages(id),
  address          TEXT NOT NULL,
  domain           TEXT NOT NULL,
  state            TEXT NOT NULL,
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  INTEGER NOT NULL,
  first_due_at     INTEGER NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  last_code        INTEGER,
  last_enhanced    TEXT,
  last_text        TEXT,
  lease_owner      INTEGER,
  lease_expires    INTEGER
);
CREATE INDEX recipients_due ON recipients(next_attempt_at)
  WHERE state IN ('queued', 'deferred');
CREATE INDEX recipients_leased ON recipients(lease_owner) WHERE state = 'in_flight';
CREATE INDEX recipients_by_message ON recipients(message_id, state);
CREATE TABLE attempts (
  id            INTEGER PRIMARY KEY,
  recipient_id  INTEGER NOT NULL,
  at            INTEGER NOT NULL,
  result        TEXT NOT NULL,
  code          INTEGER NOT NULL,
  enhanced      TEXT NOT NULL,
  text          TEXT NOT NULL
);
CREATE INDEX attempts_by_recipient ON attempts(recipient_id);
CREATE TABLE suppressions (
  address     TEXT PRIMARY KEY,
  reason      TEXT NOT NULL,
  created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE runs (
  owner       INTEGER PRIMARY KEY,
  pid         INTEGER NOT NULL,
  host        TEXT NOT NULL,
  proc_start  INTEGER NOT NULL,
  started_at  INTEGER NOT NULL
);
)sql";

// The hot path changes `state` twice per recipient (claim, outcome); every index whose
// key or WHERE clause mentions `state` is rewritten each time. Version 2 keeps only the
// claim's own index (recipients_due) on the state: lease recovery, once per run start,
// scans the table instead of paying for an in-flight index on every recipient, and the
// per-message index (used by `status --campaign`) no longer includes the state.
constexpr std::string_view kMigration2 = R"sql(
DROP INDEX recipients_leased;
DROP INDEX recipients_by_message;
CREATE INDEX recipients_by_message ON recipients(message_id);
)sql";

// Destination-level backoff across runs (storage/README.md, "Destinations"): the state
// of each destination that was ever paused, and an index to push back the due time of a
// paused domain's recipients. `domain` never changes after the insert, so the index costs
// only at enqueue, never on the claim/outcome path.
constexpr std::string_view kMigration3 = R"sql(
CREATE TABLE destinations (
  name           TEXT PRIMARY KEY,
  state          TEXT NOT NULL,
  paused_until   INTEGER,
  failures       INTEGER NOT NULL DEFAULT 0,
  last_code      INTEGER,
  last_enhanced  TEXT,
  last_text      TEXT,
  updated_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX recipients_by_domain ON recipients(domain);
)sql";

// Urgent mail (`enqueue --urgent`: receipts, password resets) is claimed before bulk work
// due earlier: its recipients' first attempt is listed here until a claim takes them. A
// table apart, not a column and a partial index of `recipients`: an index over `state`
// would be evaluated on both of every bulk recipient's state changes (+5% of a durable
// run's time, measured), while this table is written only for urgent recipients.
constexpr std::string_view kMigration4 = R"sql(
CREATE TABLE urgent_due (
  next_attempt_at  INTEGER NOT NULL,
  recipient_id     INTEGER NOT NULL,
  PRIMARY KEY (next_attempt_at, recipient_id)
) WITHOUT ROWID;
)sql";

// The hot path without a write per recipient row (storage/README.md, "Pending rows and
// ranges"). A recipient enqueued for bulk delivery is stored `pending` and listed in an
// `unclaimed` range of ids; a claim moves a run of those ids into a `leases` range, and a
// transaction's delivery of them is one `deliveries` range with its reply. The row itself
// is not written again: the claim's UPDATE (and the due index's delete it caused) and the
// delivered UPDATE were 80% of the storage thread's time per recipient. Any other outcome
// writes the row as before, and from then on the row's own state counts. `recipients` is
// now a view giving every row its effective state, so every reader (status, reports, an
// operator's sqlite3 shell) sees the states the README names. With the hot path no longer
// changing `state`, an index on it costs only on the exceptions (retries, bounces; not at
// enqueue: pending rows are left out, counted as the table's rows less the index's), and
// spares the scans of every run's start and end (leases to recover, counts).
constexpr std::string_view kMigration5 = R"sql(
ALTER TABLE recipients RENAME TO recipient_rows;
CREATE INDEX recipients_by_state ON recipient_rows(state) WHERE state <> 'pending';
CREATE TABLE unclaimed (
  due_at      INTEGER NOT NULL,
  lo          INTEGER NOT NULL,
  hi          INTEGER NOT NULL,
  message_id  INTEGER NOT NULL,
  PRIMARY KEY (due_at, lo)
) WITHOUT ROWID;
CREATE TABLE leases (
  lo          INTEGER PRIMARY KEY,
  hi          INTEGER NOT NULL,
  owner       INTEGER NOT NULL,
  expires     INTEGER NOT NULL,
  message_id  INTEGER NOT NULL
);
CREATE TABLE deliveries (
  lo        INTEGER PRIMARY KEY,
  hi        INTEGER NOT NULL,
  at        INTEGER NOT NULL,
  code      INTEGER NOT NULL,
  enhanced  TEXT NOT NULL,
  text      TEXT NOT NULL
);
CREATE VIEW recipients AS
SELECT r.id, r.message_id, r.address, r.domain,
  CASE WHEN r.state <> 'pending' THEN r.state
       WHEN d.lo IS NOT NULL THEN 'delivered'
       WHEN l.lo IS NOT NULL THEN 'in_flight'
       ELSE 'queued' END AS state,
  r.attempts + (d.lo IS NOT NULL) AS attempts,
  r.next_attempt_at, r.first_due_at, r.created_at,
  coalesce(d.at, r.updated_at) AS updated_at,
  coalesce(d.code, r.last_code) AS last_code,
  coalesce(d.enhanced, r.last_enhanced) AS last_enhanced,
  coalesce(d.text, r.last_text) AS last_text,
  coalesce(l.owner, r.lease_owner) AS lease_owner,
  coalesce(l.expires, r.lease_expires) AS lease_expires
FROM recipient_rows r
LEFT JOIN deliveries d ON r.state = 'pending'
  AND d.lo = (SELECT max(lo) FROM deliveries WHERE lo <= r.id) AND d.hi >= r.id
LEFT JOIN leases l ON r.state = 'pending' AND d.lo IS NULL
  AND l.lo = (SELECT max(lo) FROM leases WHERE lo <= r.id) AND l.hi >= r.id;
)sql";

constexpr std::array<std::string_view, 5> kMigrations = {kMigration1, kMigration2, kMigration3,
                                                         kMigration4, kMigration5};

std::unexpected<StorageError> newer_than_this_binary(const Connection& db, int version) {
  return std::unexpected(StorageError{
      0, fmt::format("{}: database schema version {} is newer than this ringmail ({})",
                     db.path(), version, kMigrations.size())});
}

// Whether this binary may write to a database at `version`: not one of a newer ringmail,
// and not another program's. Reads only.
std::expected<void, StorageError> check_ours(Connection& db, int version) {
  if (version > current_schema_version()) return newer_than_this_binary(db, version);
  if (version < 0)
    return std::unexpected(StorageError{
        SQLITE_NOTADB,
        fmt::format("{}: not a ringmail database: schema_version is {}", db.path(), version)});
  if (version > 0) return {};
  // Tables but no version: another program's database. Creating ours in it would mix two
  // applications' data in one file. An empty schema_version alone is ours, left by a first
  // migration that failed (disk full...).
  auto tables = db.query_int(
      "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name <> 'schema_version'");
  if (!tables) return std::unexpected(tables.error());
  if (tables->value_or(0) > 0)
    return std::unexpected(StorageError{
        SQLITE_NOTADB, fmt::format("{}: not a ringmail database: it has {} tables but no "
                                   "schema_version",
                                   db.path(), tables->value_or(0))});
  return {};
}

}  // namespace

int current_schema_version() { return static_cast<int>(kMigrations.size()); }

std::expected<int, StorageError> schema_version(Connection& db) {
  auto exists = db.query_int(
      "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_version'");
  if (!exists) return std::unexpected(exists.error());
  if (exists->value_or(0) == 0) return 0;
  auto v = db.query_int("SELECT version FROM schema_version");
  if (!v) return std::unexpected(v.error());
  return static_cast<int>(v->value_or(0));
}

std::expected<void, StorageError> migrate(Connection& db) {
  // Read first, without the write lock: a database already at this version (every open
  // but the first) needs no write, so `status` and a starting `run` are not held up by a
  // writer, and a database that cannot be written is still reported by what it is. A file
  // refused here is left byte for byte as it was: even the switch to WAL comes after.
  auto found = schema_version(db);
  if (!found) return std::unexpected(found.error());
  if (auto ours = check_ours(db, *found); !ours) return ours;
  if (auto ok = db.use_wal(); !ok) return ok;
  if (*found == current_schema_version()) return {};
  while (true) {
    if (auto ok = db.begin(); !ok) return ok;
    auto version = schema_version(db);
    if (!version) {
      db.rollback();
      return std::unexpected(version.error());
    }
    if (auto ours = check_ours(db, *version); !ours) {
      db.rollback();
      return ours;
    }
    if (*version == current_schema_version()) {
      db.rollback();
      return {};
    }
    // schema_version is created in the first migration's transaction, so a failed first
    // migration leaves nothing behind.
    std::expected<void, StorageError> ok{};
    if (*version == 0)
      ok = db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    if (ok) ok = db.exec(kMigrations[*version]);
    if (ok) {
      ok = db.exec(*version == 0
                       ? "INSERT INTO schema_version VALUES (1)"
                       : fmt::format("UPDATE schema_version SET version = {}", *version + 1));
    }
    if (ok) ok = db.commit();
    if (!ok) {
      db.rollback();
      return ok;
    }
  }
}

}  // namespace ringmail::storage

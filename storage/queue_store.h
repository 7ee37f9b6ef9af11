// Every query of the delivery queue on one connection: enqueue a campaign, claim due
// recipients under a lease, apply outcomes through the policy, recover the leases of dead
// runs, report status, manage the suppression list. Used by one thread at a time: the
// storage thread during `run`, the main thread for enqueue/status/suppress.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "smtp/transaction.h"
#include "storage/delivery_policy.h"
#include "storage/recipient_state.h"
#include "storage/sqlite_handle.h"
#include "storage/storage_options.h"

namespace ringmail::storage {

int64_t unix_now_ms();

// The WAL pages between checkpoints for a `run` whose database's file system has
// `free_bytes` free: 10,000 (40 MB, faster) with room to spare, SQLite's own 1,000 when
// space is short, so a run after a disk-full failure is not stopped again by its WAL.
int wal_autocheckpoint_pages(uint64_t free_bytes);

struct EnqueueRequest {
  std::string campaign = "default";
  std::string sender;
  std::string encoded_body;  // already passed through smtp::encode_data_body
  int64_t send_at_ms = 0;    // due from then (0: now)
  std::optional<std::string> idempotency_key;
  // Claimed before every bulk recipient due earlier, and queued ahead of bulk work at
  // its destination: a receipt behind a campaign to the same relay.
  bool urgent = false;
};

struct EnqueueCounts {
  int64_t message_id = 0;
  bool urgent = false;  // the request's, for add_recipient
  uint64_t queued = 0;
  uint64_t suppressed = 0;
  bool duplicate = false;  // the idempotency key was already used: nothing was added
};

struct ClaimedRecipient {
  int64_t id = 0;
  int64_t message_id = 0;
  std::string address;
  // Read with the row for the storage thread's metrics (attempts and latency of a
  // delivered recipient): the claim reads the row anyway.
  int64_t attempts = 0;  // counted before this claim
  int64_t first_due_at_ms = 0;
  bool urgent = false;
};

struct StoredMessage {
  std::string sender;
  std::string encoded_body;
};

// One recipient's outcome as the storage thread applies it.
struct RecipientUpdate {
  int64_t recipient_id = 0;
  smtp::RecipientStatus status = smtp::RecipientStatus::kDeferred;
  smtp::Reply reply;
  bool not_attempted = false;
  int64_t retry_after_ms = 0;  // parked by the engine: offer it again after this long
  bool about_recipient = false;  // smtp::RecipientOutcome::about_recipient
  bool urgent = false;  // of an urgent transaction: listed as urgent again if given back unsent
};

// Where a policy-applied outcome left its recipient, for the structured log.
struct AppliedOutcome {
  std::string address;
  int64_t attempts = 0;            // after this outcome
  int64_t next_attempt_at_ms = 0;  // deferred or queued again: when it is due
  bool suppressed = false;         // the address was added to the suppression list
};

// When `u` is a recipient given back unsent (the policy queues it again without counting
// an attempt: a drain's "not attempted", a parked one), the time it is due again.
std::optional<int64_t> unsent_due_at(const RecipientUpdate& u, const RetrySchedule& schedule,
                                     int64_t now_ms);

// A recipient given back unsent, due again at `due_ms` (QueueStore::give_back_pending).
struct GiveBack {
  int64_t id = 0;
  int64_t due_ms = 0;
  bool handled = false;  // a pending row of this run's claims: done, no row written
  bool ours = false;     // handled, and its lease was still this run's (else ignored)
  bool parked = false;   // retry_after: a postponed domain's pause may push due_ms later
  std::string address;   // read when asked for (the structured log)
};

struct StateCount {
  std::string group;  // campaign name or domain
  RecipientState state;
  uint64_t count = 0;
};

struct ReplyCount {
  int code = 0;
  std::string enhanced;
  uint64_t count = 0;
};

struct OldestDeferred {
  std::string address;
  std::string campaign;
  int64_t first_due_at_ms = 0;
  int64_t next_attempt_at_ms = 0;
  int64_t attempts = 0;
  int last_code = 0;
  std::string last_enhanced;
  std::string last_text;
};

// A destination's row (table `destinations`): written by the storage thread when the
// engine pauses a destination or finds it up again.
struct DestinationStatus {
  std::string name;      // the site: MX domain or relay name
  bool paused = false;   // state 'paused' (else 'up')
  int64_t paused_until_ms = 0;
  int64_t failures = 0;  // pauses since it was last up
  int last_code = 0;
  std::string last_enhanced;
  std::string last_text;
  int64_t updated_at_ms = 0;
};

struct StatusReport {
  std::vector<DestinationStatus> paused_destinations;  // by name
  std::vector<StateCount> by_campaign;
  std::vector<StateCount> by_domain;
  std::optional<OldestDeferred> oldest_deferred;
  std::vector<ReplyCount> top_replies;  // last reply of each recipient, most frequent first
  // The earliest next_attempt_at of a queued or deferred recipient (of the campaign, when
  // the report is of one): a --send-at not reached yet, or the next retry. nullopt: none.
  std::optional<int64_t> next_due_at;
};

// What a purge removed (or, dry, would remove).
struct PurgeCounts {
  std::map<RecipientState, uint64_t> recipients;  // by their final state
  uint64_t attempts = 0;  // rows of the attempt log removed with them
  uint64_t bodies = 0;    // messages left with no recipient whose body was dropped
  uint64_t recipients_total() const;
};

struct Suppression {
  std::string address;
  std::string reason;
  int64_t created_at_ms = 0;
};

class QueueStore {
 public:
  // Opens (creating in kReadWriteCreate) and migrates the database.
  static std::expected<QueueStore, StorageError> open(const StorageOptions& options, OpenMode mode);

  Connection& connection() { return db_; }

  // --- enqueue (one transaction for the whole campaign) ---
  // Starts the transaction. When the idempotency key was used before, `duplicate` is set
  // and add() must not be called; finish_enqueue() then just ends the transaction.
  std::expected<EnqueueCounts, StorageError> begin_enqueue(const EnqueueRequest& request,
                                                           int64_t now_ms);
  // `address` as written; `domain` lower-cased.
  std::expected<void, StorageError> add_recipient(EnqueueCounts& counts, std::string_view address,
                                                  std::string_view domain, int64_t due_at_ms,
                                                  int64_t now_ms);
  std::expected<void, StorageError> finish_enqueue();
  void abort_enqueue() {
    enqueue_range_.reset();
    db_.rollback();
  }

  // --- runs and leases ---
  // Registers this process as a run; returns its owner id (random, never 0).
  std::expected<int64_t, StorageError> register_run(int64_t now_ms);
  std::expected<void, StorageError> unregister_run(int64_t owner);
  // In-flight recipients of runs whose process is gone (same host), or whose lease has
  // expired (except a live run's of this host: it still holds them), go back to queued
  // with their attempts unchanged. Returns how many. `only_dead_runs`: only those of dead
  // runs of this host, and nothing at all (no write lock) when there is none: the check a
  // running service makes every minute.
  std::expected<uint64_t, StorageError> recover_leases(int64_t now_ms, bool only_dead_runs = false);
  // Recipients still in flight under a lease of another run (alive, or on another host,
  // whose process this host cannot check): how many, and when the first lease expires.
  struct ForeignLeases {
    uint64_t recipients = 0;
    int64_t first_expiry_ms = 0;
  };
  std::expected<ForeignLeases, StorageError> leased_by_other_runs(int64_t owner);
  // Queued or deferred recipients on the suppression list become suppressed.
  std::expected<uint64_t, StorageError> apply_suppressions(int64_t now_ms);

  // --- the storage thread's work ---
  // Called at the start of each of the storage thread's transactions: a lease found to be
  // this run's is taken as still this run's only until its transaction ends.
  void forget_lease_checks() { leases_checked_.clear(); }
  // Settings for a long run of grouped commits, outside any transaction. Durability is
  // unchanged (WAL, `synchronous` as configured).
  void tune_for_delivery();
  // Each of the following inside a transaction the caller opened.
  // Up to `limit` due recipients, urgent ones first (read_urgent), then earliest due
  // first, leased to `owner`. One SELECT on the due index, then one UPDATE per run of
  // consecutive ids (the caller holds the write lock, so the rows read are the rows
  // leased).
  std::expected<std::vector<ClaimedRecipient>, StorageError> claim(int64_t owner, size_t limit,
                                                                   int64_t now_ms,
                                                                   int64_t lease_expires_ms);
  // Urgent recipients given back unsent (a release, a drain's not-attempted outcome) are
  // listed as urgent again, so they keep their place ahead of bulk work; recipients no
  // longer waiting are skipped.
  std::expected<void, StorageError> relist_urgent(const std::vector<int64_t>& ids);
  std::expected<StoredMessage, StorageError> load_message(int64_t message_id);
  // One recipient's outcome through the policy (a delivered one goes to apply_delivered).
  // `applied`, when given, is filled for a row this outcome changed.
  std::expected<RecipientState, StorageError> apply(int64_t owner, const RecipientUpdate& update,
                                                    const RetrySchedule& schedule, int64_t now_ms,
                                                    AppliedOutcome* applied = nullptr);
  // Recipients that share one 2xx reply to the end of data (those of one transaction):
  // `delivered`, one statement per run of consecutive ids. `sorted_ids` ascending, no
  // duplicates. Rows no longer in flight under `owner` are left alone. The attempt log
  // gets a row only for a recipient that had attempts before (a first-try delivery is
  // fully described by the recipient row: attempts = 1, last_*, updated_at).
  // `first_attempts(lo, hi)`, when given, says that every id of lo..hi was claimed with no
  // attempt before: then there is no redelivery to log and the log's scan of the range is
  // skipped (it is half the statements of a one-recipient delivery). Returns how many
  // rows became delivered.
  using FirstAttempts = std::function<bool(int64_t lo, int64_t hi)>;
  std::expected<uint64_t, StorageError> apply_delivered(int64_t owner,
                                                        std::span<const int64_t> sorted_ids,
                                                        const smtp::Reply& reply, int64_t now_ms,
                                                        const FirstAttempts& first_attempts = {});
  // Claimed but never handed to a server: back to queued, no attempt counted.
  std::expected<void, StorageError> release(int64_t owner, int64_t recipient_id, int64_t now_ms);
  // The same for many; `sorted_ids` ascending, no duplicates.
  std::expected<void, StorageError> release(int64_t owner, std::span<const int64_t> sorted_ids,
                                            int64_t now_ms);
  // Pending ids of this process's claims given back unsent (a release, a drain's "not
  // attempted", a parked recipient): back in unclaimed ranges due at `due_ms`, the rest of
  // their leases re-leased as before, no row written. Items of ids that are not pending
  // claims of this process are left `handled` false, for the per-row way.
  std::expected<void, StorageError> give_back_pending(int64_t owner, std::vector<GiveBack>& items,
                                                      bool want_addresses);
  // A destination paused until `until_ms` (reason: the deciding reply) or, with
  // `paused` false, up again. A paused one gets a row (failures + 1); up only changes an
  // existing row, so destinations that never paused cost nothing.
  std::expected<void, StorageError> record_destination(std::string_view name, bool paused,
                                                       int64_t until_ms, const smtp::Reply& reason,
                                                       int64_t now_ms);
  // Queued and deferred recipients of `domain` (lower-cased) due before `until_ms` become
  // due then, without an attempt: claims skip them with no filter of their own. Until
  // the destination `name` is up again, apply() defers no recipient of `domain` earlier.
  // Returns how many rows moved. Limited to a message (limit_to_message), only that
  // message's rows move: other messages may go to that domain by another route.
  std::expected<uint64_t, StorageError> postpone_domain(std::string_view name,
                                                        std::string_view domain, int64_t until_ms);
  // The earliest next_attempt_at of a queued or deferred recipient, or due time of an
  // unclaimed range (one whose rows all went elsewhere, postponed or suppressed, says
  // "due" until the next claim drops it: one spare claim); nullopt: none.
  std::expected<std::optional<int64_t>, StorageError> next_due_at();
  // From now on claim(), next_due_at() and postpone_domain() see only this message's
  // recipients (`send`
  // delivers what it enqueued, through its own relay, and nothing else). The scoped claim
  // walks the due index and skips other messages' due rows, so it stays cheap while the
  // database holds few of those.
  void limit_to_message(int64_t message_id) { only_message_ = message_id; }

  // --- reports ---
  std::expected<StatusReport, StorageError> status(std::optional<std::string> campaign,
                                                   size_t top_replies = 10);
  // Every recipient, or only those of `message_id`.
  std::expected<std::vector<std::pair<RecipientState, uint64_t>>, StorageError> state_counts(
      std::optional<int64_t> message_id = std::nullopt);
  // Destinations paused now (recorded as paused, the pause not over), by name.
  std::expected<std::vector<DestinationStatus>, StorageError> paused_destinations();

  // --- retention (queue_retention.cc) ---
  // The id of the campaign named `name`; nullopt: none.
  std::expected<std::optional<int64_t>, StorageError> campaign_id(std::string_view name);
  // Recipients in a final state (delivered, bounced, expired, suppressed) last changed
  // before `before_ms`, of one campaign when given, are removed with their attempt log,
  // `batch` ids per transaction so a run on the same database waits at most one batch for
  // the write lock. Then every message left with no recipient keeps its row (its
  // idempotency key still refuses a repeat) but drops its body. `dry_run`: counts what
  // would go and changes nothing. Queued, deferred and in-flight recipients are never
  // touched. Freed pages are reused by later enqueues; the file does not shrink.
  std::expected<PurgeCounts, StorageError> purge_final(int64_t before_ms,
                                                       std::optional<int64_t> campaign_id,
                                                       bool dry_run, int64_t batch = 10000);
  // One step of purge_final, for a purge spread over time (the storage thread's
  // retention), short however big the bodies: while `pending_bodies` (messages emptied by
  // earlier steps) is not empty, the step drops at most 64 of their bodies; otherwise it
  // removes the ids from the first one at or after `from_id`, up to `batch` of them, in
  // one transaction, and adds the messages that lost recipients to `pending_bodies`.
  // Returns the id to go on from, nullopt when no older recipient is left to look at:
  // past the table's end, or at a recipient enqueued after the cut-off (ids grow with
  // the enqueue time, and a recipient changes only after its enqueue). Adds to `counts`.
  std::expected<std::optional<int64_t>, StorageError> purge_final_step(
      int64_t before_ms, int64_t from_id, int64_t batch, PurgeCounts& counts,
      std::set<int64_t>& pending_bodies);

  // --- suppression list (addresses compared lower-cased) ---
  std::expected<bool, StorageError> suppress(std::string_view address, std::string_view reason,
                                             int64_t now_ms);              // true: newly added
  std::expected<bool, StorageError> unsuppress(std::string_view address);  // true: was there
  std::expected<std::vector<Suppression>, StorageError> suppressions();

 private:
  explicit QueueStore(Connection db) : db_(std::move(db)) {}
  // Claims' first step: due recipients listed in urgent_due (enqueue --urgent), appended
  // to `out` as urgent and taken off the list. In the caller's write transaction.
  std::expected<void, StorageError> read_urgent(size_t limit, int64_t now_ms,
                                                std::vector<ClaimedRecipient>& out);
  // Prepares `sql` once into `slot`; later calls reuse it.
  std::expected<Statement*, StorageError> cached(Statement& slot, std::string_view sql);

  // --- pending rows (queue_pending.cc; storage/README.md, "Pending rows and ranges") ---
  // Enqueue: the pending ids added since the last range was written, and their due time.
  struct OpenRange {
    int64_t due_at_ms = 0;
    int64_t lo = 0;
    int64_t hi = 0;
    int64_t message_id = 0;
  };
  std::expected<void, StorageError> add_pending_id(int64_t id, int64_t message_id,
                                                   int64_t due_at_ms);
  std::expected<void, StorageError> close_enqueue_range();
  // Claims' pending part: up to `limit` pending rows of unclaimed ranges due by `now_ms`,
  // merged by due time with `explicit_rows` (read from the due index, with their due
  // times), into `out`. Leases what it takes, range by range.
  std::expected<void, StorageError> claim_merged(
      int64_t owner, size_t limit, int64_t now_ms, int64_t lease_expires_ms,
      std::vector<std::pair<int64_t, ClaimedRecipient>>& explicit_rows,
      std::vector<ClaimedRecipient>& out, std::vector<int64_t>& explicit_taken);
  // One of `unclaimed`'s rows.
  struct UnclaimedRange {
    int64_t due_at = 0;
    int64_t lo = 0;
    int64_t hi = 0;
    int64_t message_id = 0;
  };
  // Up to `want` pending rows of `range`, appended to `out` and leased to `owner` (one
  // `leases` row); the range keeps what is left after them, or goes.
  std::expected<void, StorageError> claim_range(int64_t owner, const UnclaimedRange& range,
                                                size_t want, int64_t lease_expires_ms,
                                                std::vector<ClaimedRecipient>& out);
  // Which of `sorted_ids` this process claimed as pending rows (and not yet gave an
  // outcome for); the rest stay in `others`.
  void split_pending(std::span<const int64_t> sorted_ids, std::vector<int64_t>& pending,
                     std::vector<int64_t>& others) const;
  // Pending ids of this process's claims (from split_pending), delivered with `reply`:
  // a `deliveries` range per run of consecutive ids of one lease, when the lease is still
  // this owner's. Returns how many became delivered.
  std::expected<uint64_t, StorageError> deliver_pending(int64_t owner,
                                                        std::span<const int64_t> sorted_ids,
                                                        const smtp::Reply& reply, int64_t now_ms);
  // Pending ids of this process's claims become ordinary in-flight rows of `owner`, for
  // an outcome that writes the row (a deferral, a bounce, a release): from then on the
  // row's own state counts. Ids whose lease is no longer this owner's stay pending.
  std::expected<void, StorageError> materialize(int64_t owner, std::span<const int64_t> sorted_ids);
  // Forgets `id`'s claim; the last outcome of a lease deletes the lease.
  std::expected<void, StorageError> settle_pending(int64_t owner, int64_t id);
  // Whether lease `lo` is still `owner`'s in the database (another run may have recovered
  // it after it expired). Remembered for the rest of the transaction.
  std::expected<bool, StorageError> lease_is_mine(int64_t owner, int64_t lease_lo);
  // Leases whose owner matches `owner_condition` (SQL over `leases`, with ?1 = now and
  // ?2, ?3 JSON arrays bound by the caller's meaning) go back to unclaimed ranges, due
  // at `now_ms`, without their delivered ids. Returns the pending rows requeued.
  std::expected<uint64_t, StorageError> requeue_leases(std::string_view owner_condition,
                                                       int64_t now_ms, std::string_view json2,
                                                       std::string_view json3);

  // This process's pending claims, changed with the transaction that writes them and not
  // restored if it rolls back: after a failed commit the storage thread stops for good
  // (StorageThread::fail), so a store whose transaction failed is not used again.
  struct PendingRun {
    int64_t last = 0;
    int64_t lease_lo = 0;
  };
  std::map<int64_t, PendingRun> pending_runs_;  // this process's claimed pending ids
  struct PendingLease {
    int64_t hi = 0;
    int64_t expires_ms = 0;
    uint64_t outstanding = 0;  // claimed ids without an outcome yet
    int64_t message_id = 0;
  };
  // Forgets this process's old claims that share an id with lo..hi, which this run now
  // claims again: their leases were recovered by another run, whole, so every id of those
  // leases goes (a stale claim must never stand for a new one).
  void forget_claims(int64_t lo, int64_t hi);
  std::map<int64_t, PendingLease> pending_leases_;  // by lo
  std::optional<OpenRange> enqueue_range_;
  std::set<int64_t> leases_checked_;  // lease_is_mine() in this transaction

  Connection db_;  // declared first: destroyed after the statements below
  std::optional<int64_t> only_message_;  // limit_to_message()
  Statement select_due_of_message_, next_due_of_message_;
  Statement insert_recipient_, find_suppressed_, select_due_, select_urgent_, delete_urgent_,
      insert_urgent_, relist_urgent_, lease_range_, load_message_, deliver_range_, log_redelivered_,
      read_for_policy_, update_after_attempt_, insert_attempt_, insert_suppression_, release_range_,
      next_due_, pause_destination_, resume_destination_, postpone_domain_,
      postpone_domain_of_message_, postpone_chunk_end_, insert_unclaimed_, select_unclaimed_,
      select_unclaimed_of_message_, read_pending_, shrink_unclaimed_, drop_unclaimed_,
      insert_lease_, check_lease_, drop_lease_, insert_delivery_, materialize_range_,
      read_given_back_;
  // Domains postponed in this process (postpone_domain) and still paused: the pause's end
  // and the destination's name. Few entries; looked up only for a deferral.
  struct Postponed {
    int64_t until_ms = 0;
    std::string name;
  };
  std::unordered_map<std::string, Postponed> postponed_;
  bool check_suppressions_ = false;  // enqueue: the list is non-empty
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace ringmail::storage

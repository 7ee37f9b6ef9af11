// The one thread that writes the database during `run`. Shards hand it outcomes without
// blocking (a push onto a mutex-guarded vector, swapped out by this thread); the feeder
// asks it for claims. It groups everything that arrived in one interval (commit_interval,
// or commit_batch outcomes, whichever first) into one SQLite transaction, so one commit
// (and with synchronous=FULL one fsync) covers thousands of state changes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/seams.h"
#include "storage/message_cache.h"
#include "storage/queue_store.h"
#include "storage/storage_metrics.h"

namespace ringmail::storage {

// A claimed recipient ready for the engine: its message loaded once and shared.
struct ClaimedItem {
  int64_t recipient_id = 0;
  std::string address;
  std::shared_ptr<const std::string> sender;
  smtp::EncodedBody body;
  bool urgent = false;  // EnqueueRequest::urgent
};

struct StorageStats {
  uint64_t outcomes_applied = 0;  // recipients whose outcome is committed
  uint64_t claimed = 0;
  uint64_t commits = 0;
  // Parked recipients (the engine's retry_after): the latest time one of them is due
  // again, and the time of the latest claim. Unix ms; 0: none.
  int64_t latest_parked_due_ms = 0;
  int64_t last_claim_ms = 0;
  // Busy timeouts waited out because another process held the write lock (a large
  // enqueue, a purge batch, a sqlite3 shell): what was pending stayed in memory meanwhile.
  uint64_t lock_waits = 0;
  // Recipients of runs found dead while this one ran (recover_dead_runs), queued again.
  uint64_t leases_recovered = 0;
  // A recipient parked in this run may still be waiting: it is due after the latest
  // claim, which therefore did not take it.
  bool parked_work_pending() const { return latest_parked_due_ms > last_claim_ms; }
};

// A recipient's new state as a commit recorded it, for the structured log: outcomes that
// went through the policy (deferred until when, bounced and suppressed, expired, queued
// again after a drain). Deliveries are not repeated here: the outcome line says it all.
struct StateChange {
  int64_t recipient_id = 0;
  RecipientState state = RecipientState::kDeferred;
  AppliedOutcome applied;
  smtp::Reply reply;
  int64_t at_ms = 0;
};
// Called on the storage thread after each commit that changed such states; must not block.
using StateChangeListener = std::function<void(std::vector<StateChange>)>;
// Called on the storage thread with a line for the operator (the database locked by
// another process, a dead run's leases taken back); must not block.
using StorageWarningListener = std::function<void(const std::string&)>;

class StorageThread final : public engine::OutcomeSink {
 public:
  // Takes the store (its connection is used by the storage thread only from now on) and
  // the run's lease owner id. Starts the thread.
  StorageThread(QueueStore store, int64_t owner, StorageOptions options, RetrySchedule schedule,
                StateChangeListener on_state_changes = {},
                StorageWarningListener on_warning = {});
  // Commits what is pending, then joins.
  ~StorageThread() override;
  StorageThread(const StorageThread&) = delete;
  StorageThread& operator=(const StorageThread&) = delete;

  // Shard threads: copies the outcome's recipient results and returns at once.
  void on_transaction_finished(unsigned shard, const smtp::TransactionOutcome& outcome) override;
  // Shard threads: queues the change for the next grouped commit, which records the
  // destination and, when it is paused, postpones its domains' due recipients to the
  // pause's end (QueueStore::postpone_domain) before that commit's claims.
  void on_destination_state(unsigned shard, const engine::DestinationStateChange& change) override;

  // Feeder thread: asks for up to `limit` due recipients; the future is ready after the
  // commit that leased them. An empty vector: nothing is due now.
  std::future<std::expected<std::vector<ClaimedItem>, StorageError>> claim(size_t limit);
  // Gives claimed recipients that were never handed to a server back (queued, no attempt);
  // `urgent_ids`, those of them that were urgent, are listed as urgent again.
  void release(std::vector<int64_t> recipient_ids, std::vector<int64_t> urgent_ids = {});
  // Any thread: the run is draining. A write lock another process holds is then waited
  // out for one more busy timeout at most, and the run stops (exit 3) if it is still held.
  void begin_drain();
  // Waits until everything submitted before this call is committed (or has failed).
  std::expected<void, StorageError> flush();
  // Runs `fn` with the store on the storage thread between commits (outside any
  // transaction) and returns what it returns. For reads like next_due_at().
  std::expected<std::optional<int64_t>, StorageError> next_due_at();

  // The first error the thread met; once set, no more claims are granted and outcomes are
  // dropped (their recipients stay in_flight under this run's lease, so the next run
  // recovers them: nothing accepted is lost). Any thread.
  std::optional<StorageError> failure() const;
  StorageStats stats() const;
  bool parked_work_pending() const { return stats().parked_work_pending(); }
  // A copy of the Prometheus counters and histograms (storage_metrics.h). Any thread;
  // cheap (a few hundred bytes copied under the mutex), meant for each scrape.
  StorageMetrics metrics() const;
  // Counts `count` recipients that the run's start-up committed into `state` before this
  // thread existed (apply_suppressions: kSuppressed) in metrics().outcomes. Any thread.
  void count_startup_changes(RecipientState state, uint64_t count);

 private:
  struct ClaimRequest {
    size_t limit;
    std::promise<std::expected<std::vector<ClaimedItem>, StorageError>> reply;
  };
  // Delivered recipients that share one reply (those of one transaction): applied by one
  // statement per run of consecutive ids. `ids` ascending, no duplicates.
  struct DeliveredGroup {
    smtp::Reply reply;
    std::vector<int64_t> ids;
  };
  // Outcomes waiting for their commit: the common case grouped, the rest one by one.
  struct PendingOutcomes {
    std::vector<DeliveredGroup> delivered;
    std::vector<RecipientUpdate> others;  // through the policy, one row each
    size_t count = 0;                     // recipients in both
    bool empty() const { return count == 0; }
    void clear() {
      delivered.clear();
      others.clear();
      count = 0;
    }
  };

  // Consecutive recipient ids claimed together with the same attempts and first due time,
  // as the delivery histograms need them. A campaign's first try is one run per message
  // of a claim, so the bookkeeping costs a few map operations per claim and per
  // transaction's outcome, not one per recipient.
  struct ClaimedRun {
    int64_t last_id = 0;  // the first id is the map's key
    int64_t attempts = 0;  // counted before this claim
    int64_t first_due_at_ms = 0;
    uint64_t outstanding = 0;  // ids of the run with no outcome or release yet
  };

  void loop();
  // One grouped commit of everything taken from the queues. Adds what it committed to
  // `metrics` (outcomes, delivery histograms); the caller keeps it only if it succeeds.
  std::expected<void, StorageError> commit_batch(const PendingOutcomes& outcomes,
                                                 const std::vector<engine::DestinationStateChange>& destinations,
                                                 std::vector<int64_t>& releases,
                                                 std::vector<ClaimRequest>& claims,
                                                 std::vector<std::vector<ClaimedItem>>& granted,
                                                 StorageMetrics& metrics);
  // Remembers the runs of a claim (`rows` in any order).
  void remember_claimed(const std::vector<ClaimedRecipient>& rows);
  // Every id of lo..hi was claimed here with no attempt before (a first try).
  bool claimed_as_first_attempts(int64_t lo, int64_t hi) const;
  // Adjacent groups with the same reply (a server that answers every message alike)
  // become one, sorted: their ids then mostly form one run, one statement for many
  // one-recipient transactions instead of one each.
  static void merge_equal_replies(std::vector<DeliveredGroup>& groups);
  // Ids lo..hi are back (an outcome or a release): forgets them; when `delivered_at_ms` is
  // set, first observes their attempts and latency. Ids this thread did not claim are
  // skipped.
  void return_claimed(int64_t lo, int64_t hi, std::optional<int64_t> delivered_at_ms,
                      StorageMetrics& metrics);
  std::expected<const MessageCache::Message*, StorageError> message(int64_t id);
  void fail(StorageError error);
  // BEGIN IMMEDIATE, waiting as long as another process holds the write lock: a failed
  // commit would stop the run and send again everything it had sent but not recorded, far
  // more than a wait costs. At a drain it gives up after one more busy timeout.
  std::expected<void, StorageError> begin_write();
  // Every `dead_run_check` (60 s): leases of runs on this host that are gone (kill -9 of a
  // sibling `run` or `send`) are queued again, so a long-lived service picks them up.
  void recover_dead_runs();
  // storage.retention, in a service: one step of a purge pass when one is due, at most
  // one a second, between commits (QueueStore::purge_final_step).
  void retention_step();

  QueueStore store_;  // storage thread only
  const int64_t owner_;
  const StorageOptions options_;
  const RetrySchedule schedule_;
  const StateChangeListener on_state_changes_;
  const StorageWarningListener on_warning_;
  std::chrono::steady_clock::time_point next_dead_run_check_ = std::chrono::steady_clock::now();
  // Storage thread only: the retention pass. next_id set while one is in progress.
  struct RetentionPass {
    std::chrono::steady_clock::time_point next_pass;
    std::chrono::steady_clock::time_point next_step;
    std::optional<int64_t> next_id;
    int64_t before_ms = 0;
    PurgeCounts counts;
    std::set<int64_t> pending_bodies;  // messages emptied, bodies not dropped yet
  };
  RetentionPass retention_;
  // Storage thread only, for this commit: its time, and the latest due time it gave a
  // parked recipient (StorageStats).
  int64_t commit_ms_ = 0;
  int64_t commit_parked_due_ms_ = 0;
  std::vector<StateChange> state_changes_;  // storage thread only: this commit's
  std::vector<int64_t> relist_now_;  // storage thread only: this commit's urgent give-backs
  MessageCache messages_;  // storage thread only: senders and bodies by message id
  // Storage thread only: runs of recipients claimed and not all back yet, keyed by their
  // first id (runs never overlap). A run is erased when its last id is back.
  std::map<int64_t, ClaimedRun> claimed_;

  mutable std::mutex mutex_;           // guards everything below
  std::condition_variable wake_;       // the storage thread waits on it
  std::condition_variable committed_;  // flush() waits on it
  PendingOutcomes outcomes_;
  std::vector<engine::DestinationStateChange> destination_changes_;
  std::vector<int64_t> releases_;
  std::vector<int64_t> urgent_releases_;  // release()'s urgent ids
  std::vector<ClaimRequest> claims_;
  uint64_t submitted_ = 0;  // generations: bumped per submission, applied per commit
  uint64_t applied_ = 0;
  bool flush_wanted_ = false;
  bool stopping_ = false;
  bool draining_ = false;  // begin_drain()
  std::optional<StorageError> failure_;
  StorageStats stats_;
  StorageMetrics metrics_;
  std::vector<std::promise<std::expected<std::optional<int64_t>, StorageError>>> due_queries_;

  std::thread thread_;  // last: started when everything above exists
};

}  // namespace ringmail::storage

#include "storage/storage_thread.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>

namespace ringmail::storage {
namespace {

// Calls fn(lo, hi) for each run of consecutive ids in `sorted` (ascending, no duplicates).
template <typename Fn>
void for_each_id_run(const std::vector<int64_t>& sorted, Fn&& fn) {
  size_t i = 0;
  while (i < sorted.size()) {
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    fn(sorted[i], sorted[j]);
    i = j + 1;
  }
}

size_t index_of(RecipientState state) { return static_cast<size_t>(state); }

}  // namespace

StorageThread::StorageThread(QueueStore store, int64_t owner, StorageOptions options,
                             RetrySchedule schedule, StateChangeListener on_state_changes,
                             StorageWarningListener on_warning)
    : store_(std::move(store)),
      owner_(owner),
      options_(std::move(options)),
      schedule_(schedule),
      on_state_changes_(std::move(on_state_changes)),
      on_warning_(std::move(on_warning)),
      // The first pass a minute in: not in the way of a start-up, and not put off for
      // ever by a service restarted more often than retention_check.
      retention_{std::chrono::steady_clock::now() +
                     std::min<std::chrono::steady_clock::duration>(
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                             options_.retention_check),
                         std::chrono::seconds(60)),
                 {}, std::nullopt, 0, {}, {}},
      messages_(options_.message_cache_bytes),
      thread_([this] {
        pthread_setname_np(pthread_self(), "ringmail-db");
        store_.tune_for_delivery();
        loop();
      }) {}

StorageThread::~StorageThread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void StorageThread::on_transaction_finished(unsigned, const smtp::TransactionOutcome& outcome) {
  const auto& tags = outcome.transaction.recipient_tags;
  const size_t n = std::min(outcome.recipients.size(), tags.size());
  // Built outside the lock: one id vector for the delivered recipients (they share the
  // reply to the end of data) instead of a copy of the reply per recipient.
  PendingOutcomes batch;
  for (size_t i = 0; i < n; ++i) {
    const smtp::RecipientOutcome& r = outcome.recipients[i];
    const auto id = static_cast<int64_t>(tags[i]);
    if (outcome.not_attempted || r.status != smtp::RecipientStatus::kDelivered) {
      batch.others.push_back({id, r.status, r.reply, outcome.not_attempted,
                              static_cast<int64_t>(outcome.retry_after.count()),
                              r.about_recipient, outcome.transaction.urgent});
      continue;
    }
    if (batch.delivered.empty() || batch.delivered.back().reply.code != r.reply.code ||
        batch.delivered.back().reply.enhanced != r.reply.enhanced ||
        batch.delivered.back().reply.text != r.reply.text) {
      batch.delivered.push_back({r.reply, {}});
      batch.delivered.back().ids.reserve(n - i);
    }
    batch.delivered.back().ids.push_back(id);
  }
  batch.count = n;
  for (DeliveredGroup& g : batch.delivered) {
    if (!std::is_sorted(g.ids.begin(), g.ids.end())) std::sort(g.ids.begin(), g.ids.end());
    g.ids.erase(std::unique(g.ids.begin(), g.ids.end()), g.ids.end());
  }
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    wake = outcomes_.empty();  // the storage thread may be idle: start its interval
    if (outcomes_.empty()) {
      std::swap(outcomes_, batch);
    } else {
      outcomes_.delivered.insert(outcomes_.delivered.end(),
                                 std::make_move_iterator(batch.delivered.begin()),
                                 std::make_move_iterator(batch.delivered.end()));
      outcomes_.others.insert(outcomes_.others.end(), std::make_move_iterator(batch.others.begin()),
                              std::make_move_iterator(batch.others.end()));
      outcomes_.count += batch.count;
    }
    ++submitted_;
    wake = wake || outcomes_.count >= options_.commit_batch;
  }
  if (wake) wake_.notify_one();
}

void StorageThread::on_destination_state(unsigned, const engine::DestinationStateChange& change) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    wake = outcomes_.empty() && destination_changes_.empty();
    destination_changes_.push_back(change);
    ++submitted_;
  }
  if (wake) wake_.notify_one();
}

std::future<std::expected<std::vector<ClaimedItem>, StorageError>> StorageThread::claim(
    size_t limit) {
  ClaimRequest request{limit, {}};
  auto future = request.reply.get_future();
  {
    std::lock_guard lock(mutex_);
    claims_.push_back(std::move(request));
  }
  wake_.notify_one();
  return future;
}

void StorageThread::release(std::vector<int64_t> recipient_ids, std::vector<int64_t> urgent_ids) {
  if (recipient_ids.empty()) return;
  {
    std::lock_guard lock(mutex_);
    releases_.insert(releases_.end(), recipient_ids.begin(), recipient_ids.end());
    urgent_releases_.insert(urgent_releases_.end(), urgent_ids.begin(), urgent_ids.end());
    ++submitted_;
  }
  wake_.notify_one();
}

std::expected<void, StorageError> StorageThread::flush() {
  std::unique_lock lock(mutex_);
  const uint64_t target = submitted_;
  flush_wanted_ = true;
  wake_.notify_one();
  committed_.wait(lock, [&] { return applied_ >= target; });
  if (failure_) return std::unexpected(*failure_);
  return {};
}

std::expected<std::optional<int64_t>, StorageError> StorageThread::next_due_at() {
  std::promise<std::expected<std::optional<int64_t>, StorageError>> reply;
  auto future = reply.get_future();
  {
    std::lock_guard lock(mutex_);
    due_queries_.push_back(std::move(reply));
  }
  wake_.notify_one();
  return future.get();
}

std::optional<StorageError> StorageThread::failure() const {
  std::lock_guard lock(mutex_);
  return failure_;
}

StorageStats StorageThread::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

StorageMetrics StorageThread::metrics() const {
  std::lock_guard lock(mutex_);
  return metrics_;
}

void StorageThread::count_startup_changes(RecipientState state, uint64_t count) {
  std::lock_guard lock(mutex_);
  metrics_.outcomes[index_of(state)] += count;
}

void StorageThread::remember_claimed(const std::vector<ClaimedRecipient>& rows) {
  auto same_run = [](const ClaimedRecipient& a, const ClaimedRecipient& b) {
    return b.id == a.id + 1 && b.attempts == a.attempts && b.first_due_at_ms == a.first_due_at_ms;
  };
  size_t i = 0;
  while (i < rows.size()) {
    size_t j = i;
    while (j + 1 < rows.size() && same_run(rows[j], rows[j + 1])) ++j;
    const int64_t first = rows[i].id, last = rows[j].id;
    // A run still remembered over these ids lost its outcome (never happens in a run:
    // every claimed id comes back once); drop it so runs never overlap.
    auto it = claimed_.upper_bound(last);
    while (it != claimed_.begin()) {
      auto prev = std::prev(it);
      if (prev->second.last_id < first) break;
      it = claimed_.erase(prev);
    }
    claimed_.emplace(first, ClaimedRun{last, rows[i].attempts, rows[i].first_due_at_ms,
                                       static_cast<uint64_t>(last - first + 1)});
    i = j + 1;
  }
}

bool StorageThread::claimed_as_first_attempts(int64_t lo, int64_t hi) const {
  auto it = claimed_.upper_bound(lo);
  if (it == claimed_.begin()) return false;
  --it;  // the run holding lo, if any
  int64_t next = lo;
  for (; it != claimed_.end() && it->first <= next; ++it) {
    const ClaimedRun& run = it->second;
    if (run.last_id < next || run.attempts != 0) return false;
    if (run.last_id >= hi) return true;
    next = run.last_id + 1;  // runs of one claim are adjacent when their ids are
  }
  return false;
}

void StorageThread::merge_equal_replies(std::vector<DeliveredGroup>& groups) {
  if (groups.size() < 2) return;
  auto same = [](const smtp::Reply& a, const smtp::Reply& b) {
    return a.code == b.code && a.enhanced == b.enhanced && a.text == b.text;
  };
  size_t kept = 0;
  for (size_t i = 1; i < groups.size(); ++i) {
    if (same(groups[kept].reply, groups[i].reply)) {
      std::vector<int64_t>& ids = groups[kept].ids;
      ids.insert(ids.end(), groups[i].ids.begin(), groups[i].ids.end());
    } else if (++kept != i) {
      groups[kept] = std::move(groups[i]);
    }
  }
  groups.resize(kept + 1);
  for (DeliveredGroup& g : groups) {
    if (!std::is_sorted(g.ids.begin(), g.ids.end())) std::sort(g.ids.begin(), g.ids.end());
    g.ids.erase(std::unique(g.ids.begin(), g.ids.end()), g.ids.end());
  }
}

void StorageThread::return_claimed(int64_t lo, int64_t hi, std::optional<int64_t> delivered_at_ms,
                                   StorageMetrics& metrics) {
  while (lo <= hi) {
    auto it = claimed_.upper_bound(lo);  // the first run starting after lo
    if (it != claimed_.begin() && std::prev(it)->second.last_id >= lo) {
      --it;  // the run holding lo
    } else if (it == claimed_.end() || it->first > hi) {
      return;  // nothing of lo..hi was claimed here
    } else {
      lo = it->first;  // skip ids not claimed here
    }
    ClaimedRun& run = it->second;
    const int64_t end = std::min(hi, run.last_id);
    const auto n = static_cast<uint64_t>(end - lo + 1);
    if (delivered_at_ms) {
      metrics.delivery_attempts.observe(static_cast<double>(run.attempts + 1), n);
      // Clamped: first_due_at is the enqueuing host's clock, the commit is this one's.
      const int64_t waited_ms = std::max<int64_t>(0, *delivered_at_ms - run.first_due_at_ms);
      metrics.delivery_latency.observe(static_cast<double>(waited_ms) / 1000.0, n);
    }
    run.outstanding -= std::min(run.outstanding, n);
    if (run.outstanding == 0) claimed_.erase(it);
    lo = end + 1;
  }
}

void StorageThread::fail(StorageError error) {
  std::lock_guard lock(mutex_);
  if (!failure_) failure_ = std::move(error);
}

std::expected<const MessageCache::Message*, StorageError> StorageThread::message(int64_t id) {
  if (const MessageCache::Message* cached = messages_.find(id)) return cached;
  auto loaded = store_.load_message(id);
  if (!loaded) return std::unexpected(loaded.error());
  return &messages_.insert(
      id, {std::make_shared<const std::string>(std::move(loaded->sender)),
           std::make_shared<const std::string>(std::move(loaded->encoded_body))});
}

void StorageThread::begin_drain() {
  std::lock_guard lock(mutex_);
  draining_ = true;
}

std::expected<void, StorageError> StorageThread::begin_write() {
  bool warned = false;
  for (unsigned waits = 0;; ++waits) {
    auto ok = store_.connection().begin();  // waits up to the busy timeout itself
    if (ok || !ok.error().locked()) {
      if (ok && warned && on_warning_) on_warning_("the database's write lock is free again");
      return ok;
    }
    bool stopping = false;
    {
      std::lock_guard lock(mutex_);
      ++stats_.lock_waits;
      ++metrics_.lock_waits;
      stopping = stopping_ || draining_;
    }
    if (stopping && waits >= 1) return ok;
    if (!warned && on_warning_)
      on_warning_("another process holds the database's write lock (an enqueue, a purge, a "
                  "sqlite3 shell?); outcomes wait in memory and no new work is claimed until "
                  "it is released");
    warned = true;
  }
}

void StorageThread::recover_dead_runs() {
  const auto now = std::chrono::steady_clock::now();
  if (now < next_dead_run_check_) return;
  next_dead_run_check_ = now + std::chrono::seconds(60);
  // Only the dead runs of this host: expired leases of live runs stay theirs, and this
  // run's own leases are never touched (QueueStore::recover_leases).
  auto recovered = store_.recover_leases(unix_now_ms(), /*only_dead_runs=*/true);
  if (!recovered || *recovered == 0) return;  // a failure here is retried in a minute
  {
    std::lock_guard lock(mutex_);
    stats_.leases_recovered += *recovered;
    metrics_.leases_recovered += *recovered;
  }
  if (on_warning_)
    on_warning_(std::to_string(*recovered) +
                " recipients in flight in a run that is gone are queued again");
}

void StorageThread::retention_step() {
  if (options_.retention.count() <= 0) return;
  using Clock = std::chrono::steady_clock;
  const auto now = Clock::now();
  if (!retention_.next_id) {
    if (now < retention_.next_pass) return;
    retention_.next_pass = now + std::chrono::duration_cast<Clock::duration>(options_.retention_check);
    retention_.next_id = 0;  // from the first id there is
    retention_.before_ms = unix_now_ms() - static_cast<int64_t>(options_.retention.count() * 1000);
    retention_.counts = {};
    retention_.pending_bodies.clear();
  } else if (now < retention_.next_step) {
    return;
  }
  PurgeCounts step;
  auto next = store_.purge_final_step(retention_.before_ms, *retention_.next_id,
                                      static_cast<int64_t>(options_.retention_batch), step,
                                      retention_.pending_bodies);
  // A second from the step's end (retention_check, when that is shorter: the tests'), so
  // the pass takes a bounded share of this thread however long a step was.
  retention_.next_step =
      Clock::now() + std::min<Clock::duration>(
                         std::chrono::seconds(1),
                         std::chrono::duration_cast<Clock::duration>(options_.retention_check));
  const uint64_t removed = step.recipients_total();
  if (removed > 0) {
    std::lock_guard lock(mutex_);
    metrics_.purged += removed;
  }
  for (const auto& [state, n] : step.recipients) retention_.counts.recipients[state] += n;
  retention_.counts.attempts += step.attempts;
  retention_.counts.bodies += step.bodies;
  if (next && (*next || !retention_.pending_bodies.empty())) {
    // Past the last recipient, what is left is the bodies: INT64_MAX finds no more ids.
    retention_.next_id = next->value_or(INT64_MAX);
    return;
  }
  // The pass is over, or failed (a lock held past the busy timeout, a full disk): what it
  // removed stays removed, and the next pass starts over.
  retention_.next_id.reset();
  if (!on_warning_) return;
  const auto before = std::chrono::floor<std::chrono::seconds>(
      std::chrono::sys_time<std::chrono::milliseconds>(std::chrono::milliseconds(retention_.before_ms)));
  const std::string removed_text = fmt::format(
      "{} recipients in a final state last changed before {:%FT%TZ} (storage.retention), {} "
      "attempt log rows, {} message bodies",
      retention_.counts.recipients_total(), before, retention_.counts.attempts,
      retention_.counts.bodies);
  if (!next)
    on_warning_(fmt::format("retention pass stopped after removing {}; tried again at the next "
                            "pass: {}{}",
                            removed_text, next.error().message, next.error().hint()));
  else if (retention_.counts.recipients_total() > 0 || retention_.counts.bodies > 0)
    on_warning_("retention: removed " + removed_text);
}

std::expected<void, StorageError> StorageThread::commit_batch(
    const PendingOutcomes& outcomes,
    const std::vector<engine::DestinationStateChange>& destinations,
    std::vector<int64_t>& releases,
    std::vector<ClaimRequest>& claims, std::vector<std::vector<ClaimedItem>>& granted,
    StorageMetrics& metrics) {
  const int64_t now = unix_now_ms();
  commit_ms_ = now;
  commit_parked_due_ms_ = 0;
  if (auto ok = begin_write(); !ok) return ok;
  store_.forget_lease_checks();
  auto work = [&]() -> std::expected<void, StorageError> {
    for (const DeliveredGroup& g : outcomes.delivered) {
      auto delivered = store_.apply_delivered(
          owner_, g.ids, g.reply, now,
          [this](int64_t lo, int64_t hi) { return claimed_as_first_attempts(lo, hi); });
      if (!delivered) return std::unexpected(delivered.error());
      metrics.outcomes[index_of(RecipientState::kDelivered)] += *delivered;
      for_each_id_run(g.ids, [&](int64_t lo, int64_t hi) { return_claimed(lo, hi, now, metrics); });
    }
    // Pending rows given back unsent (a drain's "not attempted", parked ones) go back to
    // unclaimed ranges together, one pass per lease: one apply() each would re-lease the
    // rest of its lease once per recipient.
    std::vector<GiveBack> unsent;
    std::vector<size_t> unsent_of;  // their index in outcomes.others
    for (size_t i = 0; i < outcomes.others.size(); ++i) {
      const RecipientUpdate& u = outcomes.others[i];
      if (auto due = unsent_due_at(u, schedule_, now)) {
        unsent.push_back({u.recipient_id, *due, false, false, u.retry_after_ms > 0, {}});
        unsent_of.push_back(i);
      }
    }
    std::vector<bool> given_back(outcomes.others.size(), false);
    if (!unsent.empty()) {
      if (auto ok = store_.give_back_pending(owner_, unsent, bool(on_state_changes_)); !ok)
        return ok;
      for (size_t k = 0; k < unsent.size(); ++k) {
        if (!unsent[k].handled) continue;
        const RecipientUpdate& u = outcomes.others[unsent_of[k]];
        given_back[unsent_of[k]] = true;
        return_claimed(u.recipient_id, u.recipient_id, std::nullopt, metrics);
        if (!unsent[k].ours) continue;  // its lease is another run's now: nothing committed
        ++metrics.outcomes[index_of(RecipientState::kQueued)];
        if (u.retry_after_ms > 0)
          commit_parked_due_ms_ = std::max(commit_parked_due_ms_, unsent[k].due_ms);
        if (on_state_changes_) {
          AppliedOutcome applied{std::move(unsent[k].address), 0, unsent[k].due_ms, false};
          state_changes_.push_back(
              {u.recipient_id, RecipientState::kQueued, std::move(applied), u.reply, now});
        }
      }
    }
    for (size_t i = 0; i < outcomes.others.size(); ++i) {
      if (given_back[i]) continue;
      const RecipientUpdate& u = outcomes.others[i];
      AppliedOutcome applied;
      auto state = store_.apply(owner_, u, schedule_, now, on_state_changes_ ? &applied : nullptr);
      if (!state) return std::unexpected(state.error());
      if (on_state_changes_ && *state != RecipientState::kInFlight)
        state_changes_.push_back({u.recipient_id, *state, std::move(applied), u.reply, now});
      // kInFlight: the row is no longer this run's, nothing was committed for it.
      if (*state != RecipientState::kInFlight) ++metrics.outcomes[index_of(*state)];
      if (*state == RecipientState::kQueued && u.retry_after_ms > 0)
        commit_parked_due_ms_ = std::max(commit_parked_due_ms_, now + u.retry_after_ms);
      // Given back unsent (a drain): still urgent. Attempted and deferred: a retry.
      if (u.urgent && u.not_attempted && *state == RecipientState::kQueued)
        relist_now_.push_back(u.recipient_id);
      const bool delivered = *state == RecipientState::kDelivered;
      return_claimed(u.recipient_id, u.recipient_id, delivered ? std::optional(now) : std::nullopt,
                     metrics);
    }
    // After this commit's outcomes (their deferrals are postponed too) and before its
    // claims (which then skip the paused domains).
    for (const engine::DestinationStateChange& change : destinations) {
      const int64_t until = std::chrono::duration_cast<std::chrono::milliseconds>(
                                change.paused_until.time_since_epoch())
                                .count();
      if (auto ok = store_.record_destination(change.name, change.paused, until, change.reason, now);
          !ok)
        return ok;
      if (!change.paused) continue;
      for (const std::string& domain : change.domains) {
        auto moved = store_.postpone_domain(change.name, domain, until);
        if (!moved) return std::unexpected(moved.error());
      }
    }
    if (!releases.empty()) {
      std::sort(releases.begin(), releases.end());
      releases.erase(std::unique(releases.begin(), releases.end()), releases.end());
      if (auto ok = store_.release(owner_, releases, now); !ok) return ok;
      for_each_id_run(releases, [&](int64_t lo, int64_t hi) {
        return_claimed(lo, hi, std::nullopt, metrics);
      });
    }
    if (!relist_now_.empty()) {
      if (auto ok = store_.relist_urgent(relist_now_); !ok) return ok;
    }
    const int64_t lease_expires =
        now + static_cast<int64_t>(options_.lease_duration.count() * 1000.0);
    for (ClaimRequest& c : claims) {
      auto rows = store_.claim(owner_, c.limit, now, lease_expires);
      if (!rows) return std::unexpected(rows.error());
      // Grouped by message so the engine sees runs of the same body.
      std::sort(rows->begin(), rows->end(), [](const auto& a, const auto& b) {
        return a.message_id != b.message_id ? a.message_id < b.message_id : a.id < b.id;
      });
      remember_claimed(*rows);
      std::vector<ClaimedItem> items;
      items.reserve(rows->size());
      for (ClaimedRecipient& r : *rows) {
        auto m = message(r.message_id);
        if (!m) return std::unexpected(m.error());
        items.push_back({r.id, std::move(r.address), (*m)->sender, (*m)->body, r.urgent});
      }
      granted.push_back(std::move(items));
    }
    return store_.connection().commit();
  };
  auto ok = work();
  if (!ok) {
    store_.connection().rollback();
    granted.clear();
  }
  return ok;
}

void StorageThread::loop() {
  PendingOutcomes outcomes;
  std::vector<engine::DestinationStateChange> destinations;
  std::vector<int64_t> releases;
  std::vector<ClaimRequest> claims;
  std::vector<std::promise<std::expected<std::optional<int64_t>, StorageError>>> due_queries;
  const auto interval =
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(options_.commit_interval);
  while (true) {
    uint64_t generation = 0;
    bool stop = false;
    std::optional<StorageError> failed;
    {
      std::unique_lock lock(mutex_);
      // Outcomes wait up to one interval to share a commit; claims, flushes and a full
      // batch are served at once.
      auto urgent = [&] {
        return stopping_ || flush_wanted_ || !claims_.empty() || !due_queries_.empty() ||
               outcomes_.count >= options_.commit_batch;
      };
      // The first outcome after an idle spell starts the interval: without that wake-up,
      // outcomes arriving slower than commit_batch per interval would wait for the next
      // claim, and a kill -9 meanwhile would send them all again.
      if (!urgent()) {
        wake_.wait(lock, [&] {
          return urgent() || !outcomes_.empty() || !releases_.empty() ||
                 !destination_changes_.empty();
        });
        if (!urgent()) wake_.wait_for(lock, interval, urgent);
      }
      std::swap(outcomes, outcomes_);
      destinations.swap(destination_changes_);
      releases.swap(releases_);
      relist_now_.swap(urgent_releases_);
      claims.swap(claims_);
      due_queries.swap(due_queries_);
      generation = submitted_;
      flush_wanted_ = false;
      stop = stopping_;
      failed = failure_;
    }
    merge_equal_replies(outcomes.delivered);
    if (!failed && !stop) recover_dead_runs();

    std::vector<std::vector<ClaimedItem>> granted;
    StorageMetrics committed;  // this commit's share, kept only if it succeeds
    const bool commits =
        !outcomes.empty() || !destinations.empty() || !releases.empty() || !claims.empty();
    bool wrote = false;
    if (!failed && commits) {
      const auto began = std::chrono::steady_clock::now();
      state_changes_.clear();
      auto ok = commit_batch(outcomes, destinations, releases, claims, granted, committed);
      if (!ok) {
        fail(ok.error());
        failed = ok.error();
      } else {
        // Only what is committed is logged as the recipient's state.
        if (!state_changes_.empty()) on_state_changes_(std::move(state_changes_));
        state_changes_.clear();
        size_t changes = outcomes.count + releases.size() + destinations.size();
        for (const auto& g : granted) changes += g.size();
        // A claim that found nothing (an idle service asks every idle_poll) wrote nothing:
        // not a commit for the counters and histograms.
        wrote = changes > 0;
        if (wrote) {
          committed.commit_duration.observe(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
          committed.commit_batch_size.observe(static_cast<double>(changes));
        }
      }
    }
    // Counted before the claims are handed over (moved out) below.
    uint64_t claimed_now = 0;
    for (const auto& g : granted) claimed_now += g.size();
    for (size_t i = 0; i < claims.size(); ++i) {
      if (failed) {
        claims[i].reply.set_value(std::unexpected(*failed));
      } else {
        claims[i].reply.set_value(std::move(granted[i]));
      }
    }
    for (auto& q : due_queries) {
      if (failed) {
        q.set_value(std::unexpected(*failed));
      } else {
        q.set_value(store_.next_due_at());
      }
    }
    {
      std::lock_guard lock(mutex_);
      if (!failed) {
        stats_.outcomes_applied += outcomes.count;
        stats_.claimed += claimed_now;
        if (commits) {
          stats_.latest_parked_due_ms = std::max(stats_.latest_parked_due_ms, commit_parked_due_ms_);
          if (!claims.empty()) stats_.last_claim_ms = commit_ms_;
        }
        if (wrote) {
          ++stats_.commits;
          metrics_.add(committed);
        }
      }
      applied_ = generation;
    }
    committed_.notify_all();
    if (!failed && !stop) retention_step();
    outcomes.clear();
    destinations.clear();
    releases.clear();
    relist_now_.clear();  // before the next swap, which would hand it back otherwise
    claims.clear();
    due_queries.clear();
    if (stop) {
      std::lock_guard lock(mutex_);
      if (outcomes_.empty() && destination_changes_.empty() && releases_.empty() &&
          claims_.empty() && due_queries_.empty())
        break;
    }
  }
}

}  // namespace ringmail::storage

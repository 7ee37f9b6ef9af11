#include "storage/storage_thread.h"

#include <pthread.h>

#include <algorithm>

namespace ringmail::storage {

StorageThread::StorageThread(QueueStore store, int64_t owner, StorageOptions options,
                             RetrySchedule schedule)
    : store_(std::move(store)),
      owner_(owner),
      options_(std::move(options)),
      schedule_(schedule),
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
      batch.others.push_back({id, r.status, r.reply, outcome.not_attempted});
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

void StorageThread::release(std::vector<int64_t> recipient_ids) {
  if (recipient_ids.empty()) return;
  {
    std::lock_guard lock(mutex_);
    releases_.insert(releases_.end(), recipient_ids.begin(), recipient_ids.end());
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

void StorageThread::fail(StorageError error) {
  std::lock_guard lock(mutex_);
  if (!failure_) failure_ = std::move(error);
}

std::expected<const StorageThread::Message*, StorageError> StorageThread::message(int64_t id) {
  auto it = messages_.find(id);
  if (it != messages_.end()) return &it->second;
  auto loaded = store_.load_message(id);
  if (!loaded) return std::unexpected(loaded.error());
  Message m{std::make_shared<const std::string>(std::move(loaded->sender)),
            std::make_shared<const std::string>(std::move(loaded->encoded_body))};
  return &messages_.emplace(id, std::move(m)).first->second;
}

std::expected<void, StorageError> StorageThread::commit_batch(
    const PendingOutcomes& outcomes, std::vector<int64_t>& releases,
    std::vector<ClaimRequest>& claims, std::vector<std::vector<ClaimedItem>>& granted) {
  const int64_t now = unix_now_ms();
  if (auto ok = store_.connection().begin(); !ok) return ok;
  auto work = [&]() -> std::expected<void, StorageError> {
    for (const DeliveredGroup& g : outcomes.delivered) {
      if (auto ok = store_.apply_delivered(owner_, g.ids, g.reply, now); !ok) return ok;
    }
    for (const RecipientUpdate& u : outcomes.others) {
      if (auto ok = store_.apply(owner_, u, schedule_, now); !ok)
        return std::unexpected(ok.error());
    }
    if (!releases.empty()) {
      std::sort(releases.begin(), releases.end());
      releases.erase(std::unique(releases.begin(), releases.end()), releases.end());
      if (auto ok = store_.release(owner_, releases, now); !ok) return ok;
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
      std::vector<ClaimedItem> items;
      items.reserve(rows->size());
      for (ClaimedRecipient& r : *rows) {
        auto m = message(r.message_id);
        if (!m) return std::unexpected(m.error());
        items.push_back({r.id, std::move(r.address), (*m)->sender, (*m)->body});
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
        wake_.wait(lock, [&] { return urgent() || !outcomes_.empty() || !releases_.empty(); });
        if (!urgent()) wake_.wait_for(lock, interval, urgent);
      }
      std::swap(outcomes, outcomes_);
      releases.swap(releases_);
      claims.swap(claims_);
      due_queries.swap(due_queries_);
      generation = submitted_;
      flush_wanted_ = false;
      stop = stopping_;
      failed = failure_;
    }

    std::vector<std::vector<ClaimedItem>> granted;
    if (!failed && (!outcomes.empty() || !releases.empty() || !claims.empty())) {
      auto ok = commit_batch(outcomes, releases, claims, granted);
      if (!ok) {
        fail(ok.error());
        failed = ok.error();
      }
    }
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
        for (auto& g : granted) stats_.claimed += g.size();
        if (!outcomes.empty() || !releases.empty() || !claims.empty()) ++stats_.commits;
      }
      applied_ = generation;
    }
    committed_.notify_all();
    outcomes.clear();
    releases.clear();
    claims.clear();
    due_queries.clear();
    if (stop) {
      std::lock_guard lock(mutex_);
      if (outcomes_.empty() && releases_.empty() && claims_.empty() && due_queries_.empty()) break;
    }
  }
}

}  // namespace ringmail::storage

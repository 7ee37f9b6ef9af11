// What happens to a finished transaction on a shard: retried on another connection when
// nothing of it reached a server, otherwise counted and handed to the outcome sink.
#include "engine/shard.h"

#include "engine/shard_replies.h"

namespace ringmail::engine {
namespace {

// When stamp_queued() put the transaction on a pool's queue.
Clock::time_point queued_at(const smtp::Transaction& transaction) {
  return Clock::time_point{Clock::duration(Clock::rep(transaction.caller_stamp))};
}

}  // namespace

void Shard::collect_outcomes(Connection& c) {
  if (!c.session || c.session->finished().empty()) return;
  outcome_scratch_.clear();
  std::swap(outcome_scratch_, c.session->finished());
  std::string security;
  if (c.tls && c.tls->handshake_done()) {
    TlsInfo info = c.tls->info();
    security = info.version + " " + info.cipher + (info.verified ? " verified" : " unverified") +
               (info.resumed ? " resumed" : "");
  }
  for (smtp::TransactionOutcome& outcome : outcome_scratch_) {
    outcome.transport_security = security;
    finish_transaction(std::move(outcome), c.pool);
  }
  outcome_scratch_.clear();
}

void Shard::stamp_queued(smtp::Transaction& transaction) const {
  // Never 0 in practice: the steady clock counts from boot, in nanoseconds.
  if (transaction.caller_stamp == 0) transaction.caller_stamp = uint64_t(now_.time_since_epoch().count());
}

void Shard::count_duration(const smtp::Transaction& transaction) {
  if (transaction.caller_stamp == 0) return;  // never queued on a pool
  counters_.count_transaction_duration(now_ - queued_at(transaction));
}

size_t Shard::held_by(const DestinationPool& pool) const {
  size_t held = pool.queue.size();
  for (uint32_t slot : pool.connections)
    if (const Connection& c = connections_[slot]; c.session) held += c.session->queued_transactions();
  return held;
}

void Shard::queue_or_park(DestinationPool& pool, smtp::Transaction&& transaction) {
  // A destination alone on the shard keeps half its capacity before anything is parked:
  // parking only pays when others need the room, and costs the database writes. What it
  // holds counts its transactions on connections too: they fill the capacity as well (with
  // a small capacity, a slow pool's queue alone could otherwise leave nothing for others).
  const size_t at_least = std::max<size_t>(2 * size_t(pool.limits().max_connections),
                                           options_.shard_inbox_capacity / 2);
  // At most two transactions per connection: the exact count is taken only near the bound.
  const bool near = pool.queue.size() + 2 * pool.connections.size() >= at_least;
  // Urgent work is never parked: it is what the others make way for.
  if (!transaction.urgent && pool.limits().max_backlog.count() > 0 && near &&
      held_by(pool) >= at_least) {
    // The oldest transaction queued for the first time: one put back at the front after
    // a failed connection keeps its old stamp and says nothing about the queue's pace
    // (nor does an urgent one, which jumped the queue).
    const smtp::Transaction* oldest = nullptr;
    for (size_t i = 0; i < pool.queue.size() && i < 64 && !oldest; ++i)
      if (!pool.queue[i].urgent && !not_attempted_retries_.contains(pool.queue[i].id))
        oldest = &pool.queue[i];
    if (oldest && pool.backlogged(queued_at(*oldest), now_)) {
      park(pool, std::move(transaction));
      return;
    }
  }
  stamp_queued(transaction);
  if (transaction.urgent) {  // not a sign that a backlog is over: no note_queued()
    // Behind the urgent work already waiting (few), ahead of everything else.
    auto at = pool.queue.begin();
    while (at != pool.queue.end() && at->urgent) ++at;
    pool.queue.insert(at, std::move(transaction));
    return;
  }
  pool.note_queued();
  pool.queue.push_back(std::move(transaction));
}

void Shard::park(DestinationPool& pool, smtp::Transaction&& transaction) {
  // Queued here it would wait longer than max_backlog and, once the shard's capacity is
  // full of it, hold up every other destination's work; the source keeps it instead.
  // It leaves the shard: its retry count goes with it (a service's engine lives long).
  if (!not_attempted_retries_.empty()) not_attempted_retries_.erase(transaction.id);
  smtp::TransactionOutcome outcome;
  outcome.not_attempted = true;
  // Never 0: the policy tells a parked transaction by its retry_after.
  outcome.retry_after = std::max(std::chrono::milliseconds(1),
                                 std::chrono::ceil<std::chrono::milliseconds>(pool.park_for(now_)));
  const smtp::Reply why = local_reply(
      kCongested, "destination " + pool.destination().key() + " busy: " +
                      std::to_string(pool.queue.size()) + " transactions waiting; parked");
  outcome.recipients.assign(transaction.recipients.size(),
                            smtp::RecipientOutcome{smtp::RecipientStatus::kDeferred, why});
  outcome.transaction = std::move(transaction);
  counters_.count_parked(outcome.recipients.size());
  if (sink_) sink_->on_transaction_finished(index_, outcome);
  inbox_.outstanding.fetch_sub(1, std::memory_order_relaxed);
}

void Shard::finish_transaction(smtp::TransactionOutcome&& outcome, DestinationPool* pool) {
  if (outcome.not_attempted) {
    // Nothing reached the server: another connection may try it without risk of a
    // duplicate, unless the destination is down or we are stopping.
    unsigned& retries = not_attempted_retries_[outcome.transaction.id];
    if (!draining_ && pool && !pool->dead(now_) && retries < options_.max_not_attempted_retries) {
      ++retries;
      pool->queue.push_front(std::move(outcome.transaction));
      activate(*pool);
      return;
    }
    not_attempted_retries_.erase(outcome.transaction.id);
    if (pool && !draining_ && pool->dead(now_)) report_paused_domain(*pool, outcome.transaction);
    // Given up: the session's own outcomes say why (the server's refusal, or "connect
    // to ...: Connection refused"), which is more precise than anything said here.
  } else if (!not_attempted_retries_.empty()) {
    not_attempted_retries_.erase(outcome.transaction.id);
  }
  // By site: tallied here and added once per status, not once per recipient.
  std::array<uint64_t, 3> by_status{};
  uint64_t stopped = 0;
  for (const smtp::RecipientOutcome& r : outcome.recipients) {
    // Cut unsent by the stop (the drain timeout closing a connection before its greeting,
    // say): not attempted, as the queue records it (queued again, no attempt counted).
    if (outcome.not_attempted && smtp::is_stop_reply(r.reply)) {
      ++stopped;
      continue;
    }
    counters_.count_recipient(r.reply, int(r.status));
    ++by_status[size_t(r.status) < by_status.size() ? size_t(r.status) : 1];
  }
  if (stopped != 0) counters_.count_not_attempted(stopped);
  SiteSlot& site = pool && pool->site ? *pool->site : counters_.sites().other();
  for (size_t status = 0; status < by_status.size(); ++status)
    if (by_status[status] != 0) site.count_recipients(smtp::RecipientStatus(status), by_status[status]);
  const bool any_delivered = by_status[size_t(smtp::RecipientStatus::kDelivered)] != 0;
  if (stopped < outcome.recipients.size()) {
    // Only transactions that ended by the server's or the connection's doing say
    // anything of the destination's pace (park_for).
    if (pool) pool->note_finished(now_);
    counters_.count_transaction(any_delivered);
  }
  count_duration(outcome.transaction);  // from its queue to its outcome, as every given-back one
  if (sink_) sink_->on_transaction_finished(index_, outcome);
  inbox_.outstanding.fetch_sub(1, std::memory_order_relaxed);
}

void Shard::give_up_not_attempted(smtp::Transaction&& transaction, const smtp::Reply& why,
                                  bool count_as_not_attempted, SiteSlot* site) {
  if (!not_attempted_retries_.empty()) not_attempted_retries_.erase(transaction.id);
  smtp::TransactionOutcome outcome;
  outcome.not_attempted = true;
  outcome.recipients.assign(transaction.recipients.size(),
                            smtp::RecipientOutcome{smtp::RecipientStatus::kDeferred, why});
  outcome.transaction = std::move(transaction);
  if (count_as_not_attempted) {
    counters_.count_not_attempted(outcome.recipients.size());
  } else {
    for (const smtp::RecipientOutcome& r : outcome.recipients)
      counters_.count_recipient(r.reply, int(r.status));
    (site ? *site : counters_.sites().other())
        .count_recipients(smtp::RecipientStatus::kDeferred, outcome.recipients.size());
    counters_.count_transaction(false);  // a message given up, not one dropped at a stop
  }
  count_duration(outcome.transaction);
  if (sink_) sink_->on_transaction_finished(index_, outcome);
  inbox_.outstanding.fetch_sub(1, std::memory_order_relaxed);
}

void Shard::finish_locally(smtp::Transaction&& transaction, smtp::RecipientStatus status,
                           const smtp::Reply& why, SiteSlot& site) {
  smtp::TransactionOutcome outcome;
  // The route's answer (null MX, no such domain) is about the recipients' own domain.
  outcome.recipients.assign(transaction.recipients.size(),
                            smtp::RecipientOutcome{status, why, /*about_recipient=*/true});
  outcome.transaction = std::move(transaction);
  for (const smtp::RecipientOutcome& r : outcome.recipients) counters_.count_recipient(r.reply, int(r.status));
  site.count_recipients(status, outcome.recipients.size());
  counters_.count_transaction(false);
  if (sink_) sink_->on_transaction_finished(index_, outcome);
  inbox_.outstanding.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace ringmail::engine

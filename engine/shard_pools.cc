// A shard's destination pools: which pools get scheduled, feeding their queues to
// connections, and reporting a destination paused or up to the outcome sink.
#include "engine/shard.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

#include "engine/shard_internal.h"

namespace ringmail::engine {
namespace {

// How long a connection of a pool with nothing queued stays idle before another pool
// waiting for a slot closes it: a destination with a trickle of mail keeps its connection
// between messages instead of closing and reopening for each one.
constexpr auto kIdleGrace = std::chrono::seconds(1);

// The site a pool serves, for per-site counters: the domain of an MX pool, else the
// relay's configured name (its address when it has none).
std::string_view site_of(const Destination& d) {
  if (!d.mx_domain.empty()) return d.mx_domain;
  return d.tls_name.empty() ? std::string_view(d.host) : std::string_view(d.tls_name);
}

// A destination's name in the database's destinations table and `status`: an MX pool's
// domain; a relay's configured name (else its address) with its port, so two relays on
// one host (a dead one and a good one, say) are two rows, not one overwriting the other.
std::string destination_name(const Destination& d) {
  if (!d.mx_domain.empty()) return d.mx_domain;
  const std::string& host = d.tls_name.empty() ? d.host : d.tls_name;
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(d.port);
}

// Domains as the database stores them (storage: lower-cased at enqueue).
std::string lower_domain(std::string_view domain) {
  std::string out(domain);
  for (char& ch : out)
    if (ch >= 'A' && ch <= 'Z') ch = char(ch - 'A' + 'a');
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------- pools

DestinationPool& Shard::pool_for(const Destination& destination, const std::string& key) {
  auto it = pools_.find(key);
  if (it == pools_.end()) {
    it = pools_.emplace(key, std::make_unique<DestinationPool>(destination, options_.pool)).first;
    counters_.set_destination_pools(pools_.size());
    it->second->site = &counters_.sites().slot_for(site_of(destination));
  }
  return *it->second;
}

void Shard::activate(DestinationPool& pool) {
  pool.used_since_sweep = true;
  if (pool.in_active_list) return;
  pool.in_active_list = true;
  active_pools_.push_back(&pool);
}

void Shard::sweep_idle_pools() {
  // A pool is kept while anything may still point at it: its queue or connections, a
  // closing connection (its completions still arrive), the scheduling lists, a token
  // wait, or a pause not over (its memory of the failures is what keeps a dead host from
  // being hammered). Otherwise a pool not activated for a whole sweep interval goes: a
  // service that sees a domain once must not keep its pool forever, and a pool made
  // again later starts from the current DNS answer.
  std::unordered_set<const DestinationPool*> referenced;
  for (uint32_t slot = 0; slot < connections_.size(); ++slot) {
    const Connection& c = connections_[slot];
    if (c.state != Connection::State::kFree && c.pool) referenced.insert(c.pool);
  }
  for (auto it = pools_.begin(); it != pools_.end();) {
    DestinationPool& pool = *it->second;
    const bool idle = pool.queue.empty() && pool.connections.empty() && pool.connecting == 0 &&
                      !pool.in_active_list && !pool.in_token_wait && !pool.in_slot_wait &&
                      !pool.slot_reserved && !referenced.contains(&pool) &&
                      !pool.any_host_set_aside(now_);
    if (idle && !pool.used_since_sweep) {
      it = pools_.erase(it);
      continue;
    }
    pool.used_since_sweep = false;
    ++it;
  }
  counters_.set_destination_pools(pools_.size());
}

void Shard::schedule_active_pools() {
  // Pools whose rate limit has refilled need another look even without an event.
  while (!token_waits_.empty() && token_waits_.top().first <= now_) {
    DestinationPool* pool = token_waits_.top().second;
    token_waits_.pop();
    pool->in_token_wait = false;
    activate(*pool);
  }
  // Scheduling may activate pools again; those wait for the next turn.
  scheduling_.clear();
  scheduling_.swap(active_pools_);
  for (DestinationPool* pool : scheduling_) {
    pool->in_active_list = false;
    schedule_pool(*pool);
  }
  // Slots still free (a woken pool may not have used its own: rate limited, or its work
  // went to a connection of its own): more waiters get a look next turn.
  while (!slot_waits_.empty() && connections_.in_use() + reserved_slots_ < connection_cap_ &&
         active_pools_.size() < 64)
    wake_slot_waiter();
}

void Shard::schedule_pool(DestinationPool& pool) {
  // Existing connections first: a reused connection costs the server nothing new.
  for (size_t i = 0; i < pool.connections.size() && !pool.queue.empty(); ++i)
    feed_connection(pool.connections[i]);
  // Then open connections for the work still waiting, one per waiting transaction, up to
  // the limit. Connections still connecting have already taken one transaction each.
  const size_t max_connections =
      pool.failing(now_) ? 1
      : pool.proven()    ? pool.limits().max_connections
                         : std::min<size_t>(pool.limits().max_connections,
                                            DestinationPool::kDeadAfterFailures);
  while (!draining_ && !pool.queue.empty() && pool.connections.size() < max_connections) {
    if (pool.dead(now_)) {
      defer_queue_of_dead_pool(pool);
      break;
    }
    if (!connection_slot_for(pool)) break;  // woken when a connection of the shard closes
    size_t before = pool.queue.size();
    open_connection(pool);
    if (pool.queue.size() == before) break;  // rate limited or could not open
  }
  return_reserved_slot(pool);  // woken, then found nothing to open
  wait_for_token(pool);
  // No more work will come: idle connections close now rather than at the idle timeout.
  // (An idle connection is not closed the moment another pool waits: a destination with
  // a trickle of mail would close and reopen for every message, and take a busy pool's
  // connection back each time. The waiter closes it once it has been idle a while,
  // connection_slot_for, or its idle timeout does.)
  if ((inbox_exhausted_ || draining_) && pool.queue.empty()) {
    for (uint32_t slot : pool.connections) {
      Connection& c = connections_[slot];
      if (c.state == Connection::State::kOpen && c.session->idle() && !c.quit_requested)
        ask_to_quit(slot);
    }
  }
}

bool Shard::connection_slot_for(DestinationPool& pool) {
  if (pool.slot_reserved) {  // woken with a slot held for it
    pool.slot_reserved = false;
    pool.give_back_asked = false;
    --reserved_slots_;
    return true;
  }
  // Slots held for woken waiters are not free; nor is any slot while pools wait, unless
  // there are more free slots than waiters (first come, first served).
  const size_t taken = connections_.in_use() + reserved_slots_;
  if (taken < connection_cap_ && connection_cap_ - taken > slot_waits_.size()) {
    pool.give_back_asked = false;
    return true;
  }
  if (!pool.in_slot_wait) {
    pool.in_slot_wait = true;
    slot_waits_.push_back(&pool);
  }
  // Make room: an idle connection of a pool with nothing queued is worth less than this
  // pool's waiting work. One per waiting turn; its close wakes the first waiter.
  size_t leaving = 0;  // connections on their way out: each one's slot goes to a waiter
  for (uint32_t slot = 0; slot < connections_.size(); ++slot) {
    Connection& c = connections_[slot];
    if (c.state == Connection::State::kFree) continue;
    if (c.state == Connection::State::kClosing || c.quit_requested || c.close_after_send) {
      ++leaving;
      continue;
    }
    if (c.state == Connection::State::kOpen && c.pool != &pool && c.pool->queue.empty() &&
        c.session->idle()) {
      if (now_ >= c.idle_since + kIdleGrace) {
        ask_to_quit(slot);
        return false;
      }
      // Idle only just: its pool may have its next message on the way (a trickle). It
      // closes when it has been idle kIdleGrace, by its idle timeout made that short,
      // unless its own pool gives it work first (which sets its deadline again).
      c.deadline = std::min(c.deadline, c.idle_since + kIdleGrace);
      return false;
    }
  }
  // No idle connection: a busy pool gives one back, unless enough are leaving already, or
  // this pool had one given back already and waits for it, or may not use it: failing
  // (its slot would idle through connect timeouts), or not proven yet with a connection
  // of its own still on its way (a server that never greets would hold it for minutes).
  if (leaving < slot_waits_.size() && !pool.give_back_asked && !pool.failing(now_) &&
      (pool.proven() || pool.connections.empty()))
    ask_for_connection_back(pool);
  return false;
}

void Shard::ask_for_connection_back(DestinationPool& waiter) {
  // The donor must keep more than the waiter would hold with the slot: shares converge
  // to even (Postfix's qmgr shares its process slots round-robin among destinations with
  // work) and two pools never take a connection back and forth.
  size_t most = connections_kept(waiter) + 1;
  DestinationPool* donor = nullptr;
  for (uint32_t slot = 0; slot < connections_.size(); ++slot) {
    const Connection& c = connections_[slot];
    if (c.state != Connection::State::kConnecting && c.state != Connection::State::kOpen) continue;
    DestinationPool* candidate = c.pool;
    if (candidate == &waiter || candidate == donor || candidate->connections.size() <= most)
      continue;
    const size_t kept = connections_kept(*candidate);
    if (kept > most) {
      most = kept;
      donor = candidate;
    }
  }
  if (!donor) return;
  // Of its connections, the one to free its slot soonest: open and past EHLO (one still
  // connecting would pay its handshake for a single transaction), holding the fewest
  // transactions, and of those the nearest to its max_messages_per_connection anyway.
  std::optional<uint32_t> chosen;
  std::tuple<bool, size_t, uint64_t> best{};
  for (uint32_t slot : donor->connections) {
    const Connection& c = connections_[slot];
    if (c.quit_requested || c.close_after_send) continue;
    const bool ready = c.state == Connection::State::kOpen && c.reached_ready;
    const std::tuple<bool, size_t, uint64_t> rank{!ready, c.session->queued_transactions(),
                                                  UINT64_MAX - c.transactions_assigned};
    if (!chosen || rank < best) {
      chosen = slot;
      best = rank;
    }
  }
  if (!chosen) return;
  ask_to_quit(*chosen);
  waiter.give_back_asked = true;
  // The slot it frees is this waiter's: ahead of the donor, which joins the waiters when
  // its connection closes, and would otherwise take the next slot back.
  auto it = std::find(slot_waits_.begin(), slot_waits_.end(), &waiter);
  if (it != slot_waits_.end() && it != slot_waits_.begin()) {
    slot_waits_.erase(it);
    slot_waits_.push_front(&waiter);
  }
}

size_t Shard::connections_kept(const DestinationPool& pool) const {
  size_t kept = 0;
  for (uint32_t slot : pool.connections) {
    const Connection& c = connections_[slot];
    if (!c.quit_requested && !c.close_after_send) ++kept;
  }
  return kept;
}

void Shard::ask_to_quit(uint32_t slot) {
  // Never cuts a transaction: QUIT follows those the session holds, and feed_connection
  // gives it no more (as after max_messages_per_connection).
  Connection& c = connections_[slot];
  // Waiting for a reply (not idle): that reply keeps its deadline when it is the earlier.
  // An idle connection's deadline was its idle timeout, which says nothing of how long
  // the QUIT's reply may take: it gets the QUIT's own.
  const bool awaiting_reply = c.state == Connection::State::kOpen && !c.session->idle();
  const Clock::time_point before = c.deadline;
  c.quit_requested = true;
  c.session->quit();
  // A connection still connecting has nothing to send yet, and keeps its connect deadline.
  if (c.state == Connection::State::kOpen) {
    mark_dirty(slot);
    set_deadline(c);
    if (awaiting_reply && before < c.deadline) c.deadline = before;
  }
}

void Shard::wake_slot_waiter() {
  if (connections_.in_use() + reserved_slots_ >= connection_cap_) return;
  while (!slot_waits_.empty()) {
    DestinationPool* pool = slot_waits_.front();
    slot_waits_.pop_front();
    pool->in_slot_wait = false;
    if (pool->queue.empty()) {  // its work went elsewhere (a drain, a connection)
      pool->give_back_asked = false;
      continue;
    }
    pool->slot_reserved = true;
    ++reserved_slots_;
    activate(*pool);
    return;
  }
}

void Shard::return_reserved_slot(DestinationPool& pool) {
  if (!pool.slot_reserved) return;
  pool.slot_reserved = false;
  --reserved_slots_;
  wake_slot_waiter();
}

void Shard::feed_connection(uint32_t slot) {
  Connection& c = connections_[slot];
  if (c.state != Connection::State::kConnecting && c.state != Connection::State::kOpen) return;
  if (c.quit_requested || draining_) return;
  DestinationPool& pool = *c.pool;
  smtp::ClientSession& session = *c.session;
  bool added = false;
  const uint64_t max_messages = pool.limits().max_messages_per_connection;
  while (!pool.queue.empty() && session.can_accept_transaction() &&
         (max_messages == 0 || c.transactions_assigned < max_messages) &&
         pool.take_send_token(now_)) {
    session.add_transaction(std::move(pool.queue.front()));
    pool.queue.pop_front();
    ++c.transactions_assigned;
    added = true;
  }
  if (max_messages != 0 && c.transactions_assigned >= max_messages && !c.quit_requested) {
    // A fresh connection after this many messages, as Postfix's smtp_connection_reuse_count_limit.
    c.quit_requested = true;
    session.quit();
    added = true;
  }
  if (added && c.state == Connection::State::kOpen) {
    mark_dirty(slot);
    set_deadline(c);
  }
  wait_for_token(pool);
}

void Shard::wait_for_token(DestinationPool& pool) {
  if (pool.in_token_wait || pool.queue.empty()) return;
  // time_point::max(): not rate limited, or tokens remain (a connection finishing its
  // transaction, or the pool's next turn, takes them).
  const Clock::time_point due = pool.next_token_time(now_);
  if (due == Clock::time_point::max()) return;
  pool.in_token_wait = true;
  token_waits_.emplace(due, &pool);
}

void Shard::defer_queue_of_dead_pool(DestinationPool& pool) {
  while (!pool.queue.empty()) {
    smtp::Transaction txn = std::move(pool.queue.front());
    pool.queue.pop_front();
    report_paused_domain(pool, txn);
    give_up_not_attempted(std::move(txn), pool.last_failure(), false, pool.site);
  }
}

void Shard::report_if_paused(DestinationPool& pool) {
  if (!sink_ || !pool.dead(now_)) return;
  const Clock::time_point until = pool.probe_time();
  if (until == Clock::time_point::max()) return;  // no numeric host: nothing to probe
  // Connections failing together each push their host's probe time a little: one report
  // per pause, and another only when a probe failed (a new pause).
  if (pool.paused_reported != Clock::time_point{} &&
      until < pool.paused_reported + to_duration(pool.limits().dead_destination_pause) / 2)
    return;
  pool.paused_reported = until;
  // Once per pause, so every report of it carries the same time.
  pool.paused_until_wall = std::chrono::system_clock::now() +
                           std::chrono::duration_cast<std::chrono::system_clock::duration>(until - now_);
  pool.paused_domains.clear();
  pool.up_reported = false;
  std::vector<std::string> domains;
  std::string domain = lower_domain(pool.destination().mx_domain);
  if (!domain.empty()) {
    pool.paused_domains.push_back(domain);
    domains.push_back(std::move(domain));
  }
  report_destination(pool, true, std::move(domains));
}

void Shard::report_paused_domain(DestinationPool& pool, const smtp::Transaction& transaction) {
  // Bounds the reports of a relay serving many domains; past it, recipients of the rest
  // wait for their own backoff.
  constexpr size_t kMaxDomainsPerPause = 256;
  if (!sink_ || pool.paused_reported == Clock::time_point{}) return;
  // Every domain of the transaction: a relay's transaction mixes them, and each one's
  // queued recipients are to wait for the pause.
  std::vector<std::string> fresh;
  std::string_view previous;  // consecutive recipients mostly share a domain
  for (const std::string& address : transaction.recipients) {
    if (pool.paused_domains.size() >= kMaxDomainsPerPause) break;
    const size_t at = address.rfind('@');
    if (at == std::string::npos) continue;
    const std::string_view raw = std::string_view(address).substr(at + 1);
    if (raw.empty() || raw == previous) continue;
    previous = raw;
    std::string domain = lower_domain(raw);
    if (std::find(pool.paused_domains.begin(), pool.paused_domains.end(), domain) !=
        pool.paused_domains.end())
      continue;
    pool.paused_domains.push_back(domain);
    fresh.push_back(std::move(domain));
  }
  if (!fresh.empty()) report_destination(pool, true, std::move(fresh));
}

void Shard::report_up(DestinationPool& pool) {
  if (!sink_ || (pool.up_reported && pool.paused_reported == Clock::time_point{})) return;
  pool.up_reported = true;
  pool.paused_reported = {};
  pool.paused_domains.clear();
  report_destination(pool, false, {});
}

void Shard::report_destination(DestinationPool& pool, bool paused,
                               std::vector<std::string> domains) {
  DestinationStateChange change;
  change.name = destination_name(pool.destination());
  change.domains = std::move(domains);
  change.paused = paused;
  if (paused) {
    change.paused_until = pool.paused_until_wall;
    change.reason = pool.last_failure();
  }
  sink_->on_destination_state(index_, change);
}

}  // namespace ringmail::engine

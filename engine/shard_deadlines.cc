// A shard's clocks: the RFC 5321 timeout of each connection's current step, idle pooled
// connections, and the drain that ends a run on SIGTERM; and the stop after a ring
// failure, which gives back unsent work the way a drain does.
#include "engine/shard.h"

#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "engine/shard_internal.h"
#include "engine/shard_replies.h"

namespace ringmail::engine {
namespace {

const char* awaiting_name(smtp::Awaiting awaiting) {
  switch (awaiting) {
    case smtp::Awaiting::kNothing: return "idle";
    case smtp::Awaiting::kGreeting: return "greeting";
    case smtp::Awaiting::kCommand: return "command reply";
    case smtp::Awaiting::kDataStart: return "DATA reply";
    case smtp::Awaiting::kDataEnd: return "end-of-data reply";
  }
  return "reply";
}

}  // namespace

void Shard::check_deadlines() {
  if (draining_ && now_ >= drain_deadline_) {
    for (uint32_t slot = 0; slot < connections_.size(); ++slot) {
      Connection& c = connections_[slot];
      if (c.state == Connection::State::kConnecting || c.state == Connection::State::kOpen)
        fail_connection(slot, kShutdown, "drain timeout: shutting down", ConnectionFailure::kOther);
    }
    return;
  }
  for (uint32_t slot = 0; slot < connections_.size(); ++slot) {
    Connection& c = connections_[slot];
    if (c.state != Connection::State::kConnecting && c.state != Connection::State::kOpen) continue;
    if (now_ < c.deadline) continue;
    if (c.state == Connection::State::kConnecting) {
      fail_connection(slot, kNoAnswer, "timeout connecting to " + c.pool->destination().key(),
                      ConnectionFailure::kTimeout);
      continue;
    }
    smtp::ClientSession& session = *c.session;
    if (session.idle() && !c.quit_requested && !c.send_in_flight) {
      // Idle too long: say goodbye politely; the QUIT reply gets the short quit timeout.
      c.quit_requested = true;
      session.quit();
      after_session_event(slot);
      continue;
    }
    std::string what = c.send_in_flight ? "timeout sending to " : "timeout waiting for ";
    what += c.send_in_flight ? c.pool->destination().key() : awaiting_name(session.awaiting());
    fail_connection(slot, kTimedOut, what, ConnectionFailure::kTimeout);
  }
}

void Shard::begin_drain() {
  draining_ = true;
  drain_deadline_ = now_ + to_duration(options_.drain_timeout);
  give_back_unsent();
  for (uint32_t slot = 0; slot < connections_.size(); ++slot) {
    Connection& c = connections_[slot];
    if (c.state == Connection::State::kOpen && !c.quit_requested) {
      c.quit_requested = true;
      c.session->quit();
      after_session_event(slot);
    }
  }
}

smtp::Reply Shard::stop_reply() const { return local_reply(kShutdown, stop_reason_); }

void Shard::give_back_unsent() {
  // Recipients waiting for a route were never attempted; their lookups end now, and with
  // draining_ set each callback gives its transactions back (on_route).
  if (resolver_) resolver_->cancel_all("shutting down");
  for (auto& [key, waiting] : mx_waiting_)  // none expected: a lookup not called back
    for (smtp::Transaction& txn : waiting) give_up_not_attempted(std::move(txn), stop_reply(), true);
  mx_waiting_.clear();
  for (auto& [key, pool] : pools_) {
    while (!pool->queue.empty()) {
      smtp::Transaction txn = std::move(pool->queue.front());
      pool->queue.pop_front();
      give_up_not_attempted(std::move(txn), stop_reply(), true);
    }
    activate(*pool);
  }
}

void Shard::fail_ring(int error) {
  // Nothing on this shard can make progress. Every transaction it holds gets an outcome
  // now, as at a drain, so the run's counters account for every recipient taken (with a
  // database, leases would recover them only on the next run).
  const std::string what = "io_uring failure: " + std::string(strerror(-error));
  draining_ = true;  // nothing is retried on another connection or queued again
  stop_reason_ = what + "; not attempted";
  for (uint32_t slot = 0; slot < connections_.size(); ++slot) {
    Connection& c = connections_[slot];
    if (c.state == Connection::State::kFree) continue;
    // The stop's code: what never reached the server is queued again without an attempt
    // (as at a drain); a transaction cut mid-way is a deferral all the same.
    if (c.session) c.session->abort(kShutdown, what);
    collect_outcomes(c);
  }
  give_back_unsent();
  // The run ends here for every shard: with a database, the recipients given back are due
  // again at once, and a feeder still running would hand them straight back to this shard.
  if (on_ring_failure_) on_ring_failure_(what);
  answer_inbox_without_ring();
}

void Shard::answer_inbox_without_ring() {
  // The feeder goes on handing this shard work until it closes the inbox, and blocks while
  // the shard holds its capacity: every job still gets its outcome here. Blocking in
  // poll() is fine now, as the shard has nothing else left to do.
  while (!inbox_exhausted_) {
    pollfd wake{.fd = inbox_.eventfd(), .events = POLLIN, .revents = 0};
    ::poll(&wake, 1, 50);
    uint64_t wakes = 0;
    [[maybe_unused]] ssize_t n = ::read(inbox_.eventfd(), &wakes, sizeof wakes);
    now_ = Clock::now();
    take_inbox();
  }
}



}  // namespace ringmail::engine

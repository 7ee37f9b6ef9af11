// A shard's clocks: the RFC 5321 timeout of each connection's current step, idle pooled
// connections, and the drain that ends a run on SIGTERM.
#include "engine/shard.h"

#include <string>

#include "engine/shard_replies.h"

namespace ringmail::engine {
namespace {

Clock::duration to_duration(Seconds s) { return std::chrono::duration_cast<Clock::duration>(s); }

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
      // Idle too long: say goodbye politely; the QUIT reply gets a command timeout.
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
  // Recipients waiting for a route were never attempted; their lookups end now.
  if (resolver_) resolver_->cancel_all("shutting down");
  for (auto& [key, pool] : pools_) {
    while (!pool->queue.empty()) {
      smtp::Transaction txn = std::move(pool->queue.front());
      pool->queue.pop_front();
      give_up_not_attempted(std::move(txn),
                            local_reply(kShutdown, "shutting down before this was attempted"),
                            true);
    }
    activate(*pool);
  }
  for (uint32_t slot = 0; slot < connections_.size(); ++slot) {
    Connection& c = connections_[slot];
    if (c.state == Connection::State::kOpen && !c.quit_requested) {
      c.quit_requested = true;
      c.session->quit();
      after_session_event(slot);
    }
  }
}



}  // namespace ringmail::engine

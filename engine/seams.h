// The engine's seams to the rest of ringmail: where work comes from (JobSource), where a
// recipient is routed (RouteResolver), and where outcomes go (OutcomeSink). Today: a
// recipients file, a static relay and counters; next: SQLite and MX routing via c-ares.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/destination.h"
#include "smtp/transaction.h"

namespace ringmail::engine {

// One recipient to deliver: who sends what to whom. Items sharing sender and body (the
// same EncodedBody pointer) and routed to the same destination are grouped into one
// transaction, up to the pool's recipient limit.
struct DeliveryItem {
  std::string sender;
  std::string recipient;
  smtp::EncodedBody body;
  uint64_t tag = 0;  // the source's id of this recipient; comes back in recipient_tags
  bool urgent = false;  // queued ahead of other work at its destination, never parked
};

// Pulled by the engine's feeder thread only; may block (it reads files or a database).
class JobSource {
 public:
  virtual ~JobSource() = default;
  // The next item, or nullopt when the source has nothing now.
  virtual std::optional<DeliveryItem> next() = 0;
  // After next() said nothing: blocks until there may be more (true: call next() again)
  // or the source has ended (false). The feeder hands everything it holds to the shards
  // before it waits, so nothing taken waits with it. A source that follows new work (a
  // database served by a long-running `run`) waits here; the default ends at once.
  virtual bool wait_for_more() { return false; }
  // Any thread: ends a wait_for_more() in progress and every later one (a drain).
  virtual void interrupt() {}
};

// Called by the feeder thread, never by a shard.
class RouteResolver {
 public:
  virtual ~RouteResolver() = default;
  virtual Destination route(std::string_view recipient_domain) = 0;
};

// Every destination is the relay given at start-up.
class StaticRelayResolver final : public RouteResolver {
 public:
  explicit StaticRelayResolver(Destination relay) : relay_(std::move(relay)) {}
  Destination route(std::string_view) override { return relay_; }

 private:
  Destination relay_;
};

// A destination paused (every host set aside after repeated connection failures,
// timeouts, refused greetings or a 421, or credentials refused) or back up (a connection
// reached EHLO's reply). Emitted per transition, never per recipient.
struct DestinationStateChange {
  std::string name;  // the site, as metrics name it: the MX domain, else the relay's name
  // Recipient domains whose work this destination deferred while paused (lower-cased);
  // may be empty (the transition itself). A relay serves many: each is reported once per
  // pause, when its first transaction is given back.
  std::vector<std::string> domains;
  bool paused = false;
  std::chrono::system_clock::time_point paused_until{};  // the probe time, when paused
  smtp::Reply reason;  // the reply that decided the pause (code 0: a local failure)
};

// Receives every finished transaction. Called on the shard thread that ran it, so calls
// from different shards are concurrent; an implementation must be thread-safe and must
// never block (hand work to another thread instead).
class OutcomeSink {
 public:
  virtual ~OutcomeSink() = default;
  virtual void on_transaction_finished(unsigned shard, const smtp::TransactionOutcome& outcome) = 0;
  // Same thread rules. Default: ignored (a sink that only counts outcomes).
  virtual void on_destination_state(unsigned /*shard*/, const DestinationStateChange& /*change*/) {}
};

}  // namespace ringmail::engine

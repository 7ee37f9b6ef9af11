// The connections and queued transactions of one destination on one shard, with its
// limits: concurrent connections, messages per connection, a messages-per-second rate,
// and a "dead" state after repeated connection failures (its work is deferred at once
// instead of hammering a host that refuses).
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "engine/connection.h"
#include "engine/destination.h"
#include "engine/engine_options.h"
#include "smtp/transaction.h"

namespace ringmail::engine {

class DestinationPool {
 public:
  // Consecutive connections that fail before reaching EHLO's reply, with none working,
  // after which the destination is treated as down (Postfix's "dead destination").
  static constexpr unsigned kDeadAfterFailures = 3;
  // How long a dead destination's work is deferred at once before one probe connection.
  static constexpr Clock::duration kDeadProbeInterval = std::chrono::seconds(60);

  DestinationPool(Destination destination, const PoolLimits& limits);

  const Destination& destination() const { return destination_; }
  const PoolLimits& limits() const { return limits_; }
  // False when the host is not a numeric address; `address_error()` says why.
  bool address_valid() const { return address_length_ != 0; }
  const sockaddr* address() const { return reinterpret_cast<const sockaddr*>(&address_); }
  socklen_t address_length() const { return address_length_; }
  int address_family() const { return address_.ss_family; }

  std::deque<smtp::Transaction> queue;  // waiting for a connection
  std::vector<uint32_t> connections;    // slots of connections connecting or open
  unsigned connecting = 0;

  // Rate limit (token bucket, one message = one token, burst of one second's worth).
  bool take_send_token(Clock::time_point now);
  // When the next token is due; time_point::max() when not rate limited or tokens remain.
  Clock::time_point next_token_time(Clock::time_point now) const;

  // Connection health.
  void record_connection_ready() { consecutive_failures_ = 0; }
  void record_connection_failure(const smtp::Reply& why, Clock::time_point now);
  // True while the destination is considered down. Past the probe time it turns false
  // (allowing one probe connection), so it is not const.
  bool dead(Clock::time_point now);
  const smtp::Reply& last_failure() const { return last_failure_; }
  // Since the last connection that worked, at least one failed: open one connection at a
  // time until one succeeds (slow start after trouble, as Postfix does).
  bool failing() const { return consecutive_failures_ > 0; }
  // Down at once, e.g. after a 535 to AUTH: retrying cannot help until the configuration
  // changes, so its work is deferred without a connection until the probe time.
  void mark_down(const smtp::Reply& why, Clock::time_point now) {
    consecutive_failures_ = kDeadAfterFailures;
    last_failure_ = why;
    dead_until_ = now + kDeadProbeInterval;
  }
  // An opportunistic STARTTLS handshake failed here: later connections stay in plaintext
  // (as Postfix does) rather than failing the same way every time.
  bool starttls_broken = false;

  void remove_connection(uint32_t slot) {
    auto it = std::find(connections.begin(), connections.end(), slot);
    if (it != connections.end()) {
      *it = connections.back();
      connections.pop_back();
    }
  }

  bool in_active_list = false;  // scheduling flag owned by the shard

 private:
  void refill(Clock::time_point now);

  Destination destination_;
  PoolLimits limits_;
  sockaddr_storage address_{};
  socklen_t address_length_ = 0;
  double tokens_ = 0;
  Clock::time_point tokens_updated_{};
  unsigned consecutive_failures_ = 0;
  Clock::time_point dead_until_{};
  smtp::Reply last_failure_;
};

}  // namespace ringmail::engine

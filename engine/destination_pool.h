// The connections and queued transactions of one destination on one shard, with its
// limits: concurrent connections, messages per connection, a messages-per-second rate.
// A destination has one or more hosts in the order to try (a relay; a domain's MX
// exchangers). A host that keeps failing is set aside and the next one is used
// (failover); when every host is set aside the destination is "dead": its work is
// deferred at once instead of hammering hosts that refuse, until a probe time.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "engine/connection.h"
#include "engine/destination.h"
#include "engine/engine_options.h"
#include "engine/site_counters.h"
#include "smtp/transaction.h"

namespace ringmail::engine {

// One host a pool may connect to.
struct PoolHost {
  std::string address;   // numeric IPv4/IPv6
  std::string tls_name;  // for SNI and the certificate check; the address when empty
  uint16_t preference = 0;  // MX preference: hosts come sorted by it
  sockaddr_storage sockaddr{};
  socklen_t sockaddr_length = 0;  // 0: `address` is not numeric
  unsigned consecutive_failures = 0;
  Clock::time_point set_aside_until{};
};

class DestinationPool {
 public:
  // Consecutive connections to the only host that fail before reaching EHLO's reply,
  // with none working, after which the destination is down (Postfix's "dead
  // destination"). With several hosts, one failure moves on to the next host.
  static constexpr unsigned kDeadAfterFailures = 3;
  // How long a dead destination's work is deferred at once before one probe connection,
  // by default (PoolLimits::dead_destination_pause).
  static constexpr Clock::duration kDeadProbeInterval = std::chrono::seconds(60);

  // A destination with the single host `destination.host` (a relay).
  DestinationPool(Destination destination, const PoolLimits& limits);
  // A destination with several hosts, tried in this order (a domain's exchangers).
  DestinationPool(Destination identity, std::vector<PoolHost> hosts, const PoolLimits& limits);

  const Destination& destination() const { return destination_; }
  const PoolLimits& limits() const { return limits_; }
  // False when no host is a numeric address.
  bool address_valid() const;
  // The host a new connection should use: among the usable hosts of the best preference,
  // in turn (so equal-preference exchangers share the load). nullopt when every host is
  // set aside (dead()).
  std::optional<size_t> pick_host(Clock::time_point now);
  const PoolHost& host(size_t index) const { return hosts_[index]; }
  size_t host_count() const { return hosts_.size(); }

  std::deque<smtp::Transaction> queue;  // waiting for a connection
  // The oldest queued transaction, queued at `oldest_queued_at`, has waited
  // PoolLimits::max_backlog. Shard::queue_or_park parks on this, when max_backlog is on and
  // the queue is long enough.
  bool backlogged(Clock::time_point oldest_queued_at, Clock::time_point now) const {
    return now - oldest_queued_at >= std::chrono::duration_cast<Clock::duration>(limits_.max_backlog);
  }
  // How long a transaction parked now should stay away: about the time the pool needs for
  // what is queued ahead of it, the queue and what was parked before it in this backlog,
  // at the rate it has been finishing transactions; at least max_backlog, at most an
  // hour. Spreading the parked work over that time means each recipient comes back about
  // once, when there is room, instead of every max_backlog.
  Clock::duration park_for(Clock::time_point now);
  void note_queued() { parked_in_backlog_ = 0; }  // the backlog is over
  // A transaction of this pool finished (any outcome): feeds the rate park_for() uses.
  void note_finished(Clock::time_point now);
  std::vector<uint32_t> connections;    // slots of connections connecting or open
  unsigned connecting = 0;

  // Rate limit (token bucket, one message = one token, burst of one second's worth).
  bool take_send_token(Clock::time_point now);
  // When the next token is due; time_point::max() when not rate limited or tokens remain.
  Clock::time_point next_token_time(Clock::time_point now) const;

  // Connection health, per host.
  void record_connection_ready(size_t host);
  // A connection of this pool has reached EHLO's reply since the pool was made or last
  // found dead. Until one has, the pool opens no more connections at once than it takes
  // to find the destination dead (kDeadAfterFailures): a dead host gets 3 connection
  // attempts, not max_connections, at every start of a run and every end of a pause.
  bool proven() const { return proven_; }
  void record_connection_failure(size_t host, const smtp::Reply& why, Clock::time_point now);
  // True while every host is set aside. Past a host's probe time it may be tried again
  // (one probe), so this is not const.
  bool dead(Clock::time_point now) { return !best_usable_host(now).has_value(); }
  const smtp::Reply& last_failure() const { return last_failure_; }
  // The next host had a failure since it last worked: open one connection at a time
  // until one succeeds (slow start after trouble, as Postfix does).
  bool failing(Clock::time_point now);
  // Every host down at once, e.g. after a 535 to AUTH: retrying cannot help until the
  // configuration changes, so work is deferred without a connection until the probe time.
  void mark_down(const smtp::Reply& why, Clock::time_point now);
  // An opportunistic STARTTLS handshake failed here: connections opened in the next
  // PoolLimits::dead_destination_pause skip STARTTLS rather than failing the same way
  // every time (the transactions that failure gave back are retried in plaintext at
  // once). Postfix falls back for the failed delivery alone; forever would be worse, as
  // one cut handshake (or an attacker's) would strip TLS from every domain sharing an MX
  // pool for the whole run. The dead-destination pause is the operator's existing answer
  // to "how long does a destination's failure last" (60 s by default): a broken server
  // costs one failed handshake per pause, a glitch costs a minute of plaintext.
  void note_starttls_failed(Clock::time_point now) { starttls_broken_until_ = now + pause(); }
  bool starttls_broken(Clock::time_point now) const { return now < starttls_broken_until_; }

  void remove_connection(uint32_t slot) {
    auto it = std::find(connections.begin(), connections.end(), slot);
    if (it != connections.end()) {
      *it = connections.back();
      connections.pop_back();
    }
  }

  // The earliest time a set-aside host may be probed (meaningful while dead()).
  Clock::time_point probe_time() const;
  // Owned by the shard: what the outcome sink was last told (on_destination_state), so a
  // state is reported once per transition. `paused_reported`: the probe time of the pause
  // reported ({} when none); `paused_domains`: recipient domains reported in that pause.
  Clock::time_point paused_reported{};
  std::chrono::system_clock::time_point paused_until_wall{};  // the same, as reported
  std::vector<std::string> paused_domains;
  bool up_reported = false;

  bool in_active_list = false;  // scheduling flag owned by the shard
  bool in_token_wait = false;   // in the shard's token_waits_ (one entry at a time)
  // Activated since the shard's last sweep of idle pools (Shard::sweep_idle_pools).
  bool used_since_sweep = true;
  // In the shard's list of pools waiting for a connection slot (max_connections_per_shard).
  bool in_slot_wait = false;
  // Woken from that list with a slot held for it, which no other pool may take.
  bool slot_reserved = false;
  // Waiting, it had a busy pool give a connection back (Shard::ask_for_connection_back):
  // no second one is asked for until it gets a slot.
  bool give_back_asked = false;
  // Some host is set aside past `now` (a pause not over). Unlike dead(), no side effect.
  bool any_host_set_aside(Clock::time_point now) const;
  // Where this pool's recipients and failed connections are counted by site; set by the
  // shard when it makes the pool (a slot of its DeliveryCounters, which outlive it).
  SiteSlot* site = nullptr;

 private:
  void refill(Clock::time_point now);
  Clock::duration pause() const {
    return std::chrono::duration_cast<Clock::duration>(limits_.dead_destination_pause);
  }

  unsigned failures_to_set_aside() const { return hosts_.size() == 1 ? kDeadAfterFailures : 1; }
  bool usable(size_t index, Clock::time_point now);
  // The first usable host in order, without taking a turn (for dead() and failing()).
  std::optional<size_t> best_usable_host(Clock::time_point now);
  size_t next_turn_ = 0;  // rotates among equal-preference hosts

  Destination destination_;
  PoolLimits limits_;
  std::vector<PoolHost> hosts_;
  double tokens_ = 0;
  Clock::time_point tokens_updated_{};
  bool proven_ = false;
  // Finished transactions per second, measured over windows of kRateWindow.
  static constexpr Clock::duration kRateWindow = std::chrono::seconds(2);
  Clock::time_point rate_window_start_{};
  uint64_t finished_in_window_ = 0;
  double finish_rate_ = 0;
  uint64_t parked_in_backlog_ = 0;
  smtp::Reply last_failure_;
  Clock::time_point starttls_broken_until_{};
};

}  // namespace ringmail::engine

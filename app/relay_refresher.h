// A relay given by name, looked up again every minute on a thread of its own, so a service
// that runs for weeks follows its provider when the relay moves to another address. The
// lookup is getaddrinfo (NSS: /etc/hosts, container service names), which blocks for
// seconds when DNS is slow: never on a shard thread, nor on the feeder that routes work.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/domain_route_resolver.h"

namespace ringmail::app {

// How often a relay name is looked up again: Postfix asks for every connection through its
// cache; once a minute follows a move within about a TTL at the cost of one lookup.
inline constexpr std::chrono::milliseconds kRelayRefreshInterval = std::chrono::seconds(60);

// kRelayRefreshInterval, or RINGMAIL_RELAY_REFRESH_MS when that is a positive number of
// milliseconds: a hook for end-to-end tests, which cannot wait a minute. Not a setting.
std::chrono::milliseconds relay_refresh_interval();

// What one lookup means for the address in use; no thread, no clock, no I/O. A failure
// keeps the last good address and is said once, until a lookup works again; a new
// address is published and said.
class RelayAddressTracker {
 public:
  RelayAddressTracker(std::string name, std::string address)
      : name_(std::move(name)), address_(std::move(address)) {}

  struct Step {
    std::optional<std::string> publish;  // the new numeric address, when it changed
    std::optional<std::string> message;  // one line for stderr (no newline), when worth one
  };
  // `result`: a numeric address, or the lookup's error text.
  // `result`: every address the name has now (lookup_relay_addresses), or the error text.
  // The address in use stays while it is among them: a name with several addresses
  // (round-robin DNS, as hosted relays have) comes back in another order at every lookup,
  // and each change would be a new pool (slow start, TLS handshakes, its own limits).
  Step on_lookup(const std::expected<std::vector<std::string>, std::string>& result);

  const std::string& address() const { return address_; }

 private:
  std::string name_;
  std::string address_;
  bool failing_ = false;  // the last lookup failed and that was said
};

// A numeric address for a host name, or the error text; the real one is lookup_relay_host().
using RelayHostLookup =
    std::function<std::expected<std::vector<std::string>, std::string>(const std::string&)>;
// Where a message line goes; the real one is one write(2) to stderr.
using RelayMessageSink = std::function<void(const std::string&)>;

// Looks `name` up every `interval` on its own thread and re-addresses every target (their
// `host`; port, tls_name and profile stay) when the address changes. A new address is a
// new pool key: new transactions go there, the old pool drains and idles out by itself.
//
// Stopping never waits for a lookup in progress (getaddrinfo cannot be cancelled and may
// take seconds): the thread is then detached and ends by itself when the lookup returns,
// publishing and saying nothing. Everything it touches (lookup, sink, targets) is in
// state it shares ownership of, so it outlives this object safely; at process exit it
// simply goes with the process. A thread waiting between lookups is joined at once.
class RelayAddressRefresher {
 public:
  struct Options {
    std::chrono::milliseconds interval = kRelayRefreshInterval;
    RelayHostLookup lookup;    // empty: lookup_relay_addresses()
    RelayMessageSink message;  // empty: stderr
  };
  // `address` is the start-up lookup's answer, which every target's host holds already.
  // The thread starts with every signal blocked: it must never take the SIGTERM that the
  // main thread waits for (it may be made before StopSignals blocks them).
  RelayAddressRefresher(std::string name, std::string address,
                        std::vector<std::shared_ptr<engine::LiveDestination>> targets,
                        Options options);
  ~RelayAddressRefresher() { stop(); }
  RelayAddressRefresher(const RelayAddressRefresher&) = delete;
  RelayAddressRefresher& operator=(const RelayAddressRefresher&) = delete;

  // A lookup now rather than at the end of the interval (tests; a SIGHUP could use it).
  void refresh_now();
  // Lookups finished so far; waits up to `timeout` for at least `count` (tests).
  uint64_t lookups() const;
  bool wait_for_lookups(uint64_t count, std::chrono::milliseconds timeout) const;
  // Ends the thread: joined when idle, detached while a lookup is in progress. Idempotent.
  void stop();

 private:
  struct State;
  static void run(std::shared_ptr<State> state);

  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace ringmail::app

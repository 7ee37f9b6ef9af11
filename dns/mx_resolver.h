// The mail exchangers of a domain, found with c-ares without blocking and without threads:
// the owner's event loop watches c-ares's sockets and timer for it (see MxResolver). One
// resolver per shard; nothing here is shared or locked.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::dns {

// The owner's event loop, as the resolver sees it: it polls the resolver's sockets (in a
// shard, io_uring POLL_ADD) and reports readiness with MxResolver::on_socket_ready().
class SocketWatcher {
 public:
  virtual ~SocketWatcher() = default;
  // Sets what to watch `fd` for, replacing what was asked before for the same fd. The
  // first call for an fd starts watching it; later calls change the interest (a TCP
  // socket asks for writability while it has a query to send, then only readability);
  // (fd, false, false) stops: the resolver closes `fd` right after this call returns, and
  // the number may come back in a later watch() for a new socket. Called from inside
  // resolve(), on_socket_ready(), on_timer(), cancel_all() and ~MxResolver; it must not
  // call back into the resolver.
  virtual void watch(int fd, bool readable, bool writable) = 0;
  //
  // With one-shot io_uring polls (POLL_ADD, re-armed after each completion):
  //  - first watch(fd, ...): arm a poll with that mask, tagged with a fresh generation;
  //  - a changed mask while armed: POLL_REMOVE the armed poll and arm the new mask at once
  //    (do not wait for the old one to fire: a TCP socket waiting for POLLOUT would stall);
  //  - watch(fd, false, false): POLL_REMOVE; a poll holds a reference to the socket, so
  //    without it the closed socket lives on. Drop completions of older generations (or
  //    pass them on: on_socket_ready() ignores fds it does not watch, and a spurious
  //    readiness report for a reused number is harmless, only wasted work);
  //  - after a completion for a still-watched fd: on_socket_ready(), then re-arm with the
  //    mask as it is *after* that call.
};

struct Exchanger {
  std::string name{};  // lower-case, no trailing dot
  uint16_t preference = 0;
  // Numeric addresses ("192.0.2.1", "2001:db8::1"), the preferred family first.
  std::vector<std::string> addresses{};
};

struct Route {
  enum class Status {
    kOk,                // `exchangers` holds at least one exchanger with an address
    kNullMx,            // RFC 7505 null MX: the domain accepts no mail; bounce 5.1.10
    kNoSuchDomain,      // NXDOMAIN, no MX and no address, or not a valid name; bounce 5.1.2
    kTemporaryFailure,  // SERVFAIL, REFUSED, timeout, no exchanger with an address; defer
  };
  Status status = Status::kTemporaryFailure;
  std::string domain{};  // as looked up: lower-case, no trailing dot; empty for an invalid name
  // kOk only: by preference, equal preferences in an order shuffled for each caller; an
  // implicit MX (RFC 5321 §5.1: no MX record, the domain's own address) is one exchanger
  // named like the domain with preference 0. At most ResolverOptions::max_exchangers.
  std::vector<Exchanger> exchangers{};
  std::string detail{};  // for logs and delivery outcomes, e.g. "mx.test: MX lookup: SERVFAIL"
  // Until when this answer is served from the cache (the clock of ResolverOptions::clock).
  std::chrono::steady_clock::time_point expires{};
};

std::string_view to_string(Route::Status status);

struct ResolverOptions {
  // "127.0.0.1:5353", "[::1]:53", "192.0.2.53" (port 53). Empty: the system's
  // /etc/resolv.conf, read once by create().
  std::vector<std::string> servers{};
  enum class Families { kBoth, kIpv4Only, kIpv6Only };
  Families families = Families::kBoth;  // which address records are asked for
  bool prefer_ipv6 = false;             // order of the families in Exchanger::addresses
  // c-ares's per-try timeout; each retry doubles it, so one query gives up after
  // query_timeout * (2^tries - 1) with one server (2 s, 2 tries: 6 s). A route needs an
  // MX query and then the address queries, so it takes at most twice that.
  std::chrono::milliseconds query_timeout{2000};
  int tries = 2;
  size_t max_exchangers = 5;  // exchangers whose addresses are looked up, best first
  // How long NXDOMAIN and null MX answers are cached.
  std::chrono::seconds negative_ttl{300};
  // Positive answers are cached for the smallest TTL of the records used, at most this.
  std::chrono::seconds max_ttl{3600};
  // How long a temporary failure is cached so that a burst of recipients of a broken
  // domain does not become a burst of queries. 0: not cached.
  std::chrono::seconds failure_ttl{5};
  size_t max_cache_entries = 100000;  // per cache (routes, exchanger addresses)
  // Queries beyond this many wait in a queue: a burst of thousands of new domains would
  // otherwise overflow the DNS server's socket buffer, and every dropped query costs a
  // full timeout. (dnsmasq on loopback: 2000 domains at once take 0.1 s with 50 or 100 in
  // flight, 2 s with 200, 4 s with 400.)
  size_t max_queries_in_flight = 64;
  unsigned seed = 0;  // of the shuffle of equal preferences; 0: random
  // The cache's clock; empty: std::chrono::steady_clock::now. (c-ares's own timeouts
  // always run on real time.)
  std::function<std::chrono::steady_clock::time_point()> clock{};
};

struct ResolverStats {
  uint64_t queries_sent = 0;     // DNS queries handed to c-ares (MX, A, AAAA)
  uint64_t cache_hits = 0;       // resolve() answered from the route cache
  uint64_t cache_misses = 0;     // resolve() that started a lookup
  uint64_t coalesced = 0;        // resolve() that joined a lookup already in flight
  uint64_t failures = 0;         // lookups that ended in kTemporaryFailure
  uint64_t host_cache_hits = 0;  // exchanger addresses taken from the address cache
  uint64_t invalid_names = 0;    // resolve() rejected by normalize_domain()
  uint64_t queries_queued = 0;   // queries that waited for max_queries_in_flight
};

// Resolves domains to routes. Single-threaded: every call on the thread that owns it.
//
// The owner's loop drives it:
//  - SocketWatcher::watch() says which sockets to poll; readiness goes to
//    on_socket_ready() (report POLLERR/POLLHUP as readable, so c-ares sees the error).
//  - next_timeout() bounds the loop's wait; when it has passed, call on_timer().
// Lookups: an MX query, then A and/or AAAA queries for up to max_exchangers exchangers
// (skipped when their addresses are cached). An exchanger without an address is left out
// of the route; when none is left the route is kTemporaryFailure (also when every
// exchanger's name is NXDOMAIN: a broken MX set is often fixed soon). With no MX record
// the domain's own A/AAAA records make an implicit MX; if it has none either (NODATA or
// NXDOMAIN) the route is kNoSuchDomain.
class MxResolver {
 public:
  using Callback = std::function<void(const Route&)>;

  // `watcher` must outlive the resolver (the destructor closes sockets through it). Fails
  // when c-ares cannot be set up or a server is not "host[:port]".
  static std::expected<std::unique_ptr<MxResolver>, std::string> create(ResolverOptions options,
                                                                        SocketWatcher& watcher);
  // Stops every query and closes its sockets; callbacks of lookups still in flight are
  // destroyed without being called (use cancel_all() first to have them called).
  ~MxResolver();
  MxResolver(const MxResolver&) = delete;
  MxResolver& operator=(const MxResolver&) = delete;

  // Calls `done` exactly once with the route of `domain` (case and a trailing dot do not
  // matter): before resolve() returns when the route is cached or the name is invalid (or,
  // rarely, when c-ares fails at once), otherwise later from inside on_socket_ready(),
  // on_timer() or cancel_all(). Requests
  // for a name already being looked up wait for that lookup. `done` may call resolve()
  // again, but must not destroy the resolver. The Route is valid only during the call.
  void resolve(std::string_view domain, Callback done);

  void on_socket_ready(int fd, bool readable, bool writable);
  // Lets c-ares time out and retry queries; call when next_timeout() has passed.
  void on_timer();
  // How long the loop may wait before calling on_timer(): c-ares's next timeout, rounded up
  // to whole milliseconds; nullopt when no query is in flight. Ask again before every wait:
  // resolve() and the callbacks start new queries.
  std::optional<std::chrono::milliseconds> next_timeout() const;

  // Ends every lookup in flight now: each waiting callback gets kTemporaryFailure with
  // `why` in the detail. For a drain or shutdown, before destroying the resolver.
  void cancel_all(std::string_view why);

  ResolverStats stats() const;
  // Callbacks not called yet.
  size_t pending() const;

 private:
  struct Impl;
  explicit MxResolver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringmail::dns

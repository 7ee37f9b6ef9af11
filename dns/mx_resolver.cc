#include "dns/mx_resolver.h"

// c-ares 1.18 notes that shape this file:
//  - ARES_OPT_SOCK_STATE_CB is how c-ares tells us which sockets to poll: (fd, 1, 0) when it
//    opens a UDP socket, (fd, 1, 1) while a TCP socket has bytes to send, (fd, 0, 0) just
//    before it closes one. We pass that through to the SocketWatcher unchanged.
//  - ares_process_fd(fd, fd) reads/writes that socket *and* handles timeouts;
//    ares_process_fd(BAD, BAD) handles timeouts only (on_timer).
//  - Every ares_query callback runs exactly once: with the answer, an error, ARES_ECANCELLED
//    (ares_cancel) or ARES_EDESTRUCTION (ares_destroy). It may run inside ares_query itself
//    (no server, bad name), so no reference into our maps is held across a send.
//  - ares_query's status already folds the rcode: ARES_ENOTFOUND is NXDOMAIN, ARES_ENODATA
//    is NOERROR without answers. SERVFAIL/REFUSED make c-ares try the next server; when
//    none is left 1.18.1 reports ARES_ECONNREFUSED, not ARES_ESERVFAIL (checked against
//    a scripted server). We keep that failover rather than ARES_FLAG_NOCHECKRESP's exact
//    rcodes: with several resolvers, another one may well answer.
//  - c-ares closes its UDP socket when no query is left and opens a new one for the next
//    burst, so watch() sees (fd, 1, 0) ... (fd, 0, 0) per burst, often with the same number.
//  - ares_parse_mx_reply gives no TTLs; dns_message.h reads them.
//
// User callbacks never run inside a c-ares callback: finished routes are queued and handed
// out after c-ares has returned, so a callback may call resolve() (which may enter c-ares)
// without re-entering c-ares from inside itself.

#include <ares.h>
#include <arpa/inet.h>

#include <algorithm>
#include <cassert>
#include <deque>
#include <random>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "dns/dns_message.h"
#include "dns/domain_name.h"
#include "dns/exchanger_order.h"

namespace ringmail::dns {

std::string_view to_string(Route::Status status) {
  switch (status) {
    case Route::Status::kOk:
      return "ok";
    case Route::Status::kNullMx:
      return "null MX";
    case Route::Status::kNoSuchDomain:
      return "no such domain";
    case Route::Status::kTemporaryFailure:
      return "temporary failure";
  }
  return "?";
}

namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

constexpr int kClassIn = 1;
constexpr int kTypeA = 1;
constexpr int kTypeMx = 15;
constexpr int kTypeAaaa = 28;
// Bounds on what one answer can make us hold or do. Of more than kMaxMxRecords MX records
// (a real domain has a handful; a 64 KiB answer holds a few thousand) only the best are
// ordered and deduplicated.
constexpr size_t kMaxMxRecords = 50;
constexpr int kMaxAddressesPerFamily = 16;

enum class QueryKind : uint8_t { kMx, kA, kAaaa };

std::string describe_status(int status) {
  switch (status) {
    case ARES_ENOTFOUND:
      return "NXDOMAIN";
    case ARES_ENODATA:
      return "no records";
    case ARES_ESERVFAIL:
      return "SERVFAIL";
    case ARES_EREFUSED:
      return "REFUSED";
    case ARES_ETIMEOUT:
      return "timeout";
    case ARES_ECONNREFUSED:
      // c-ares 1.18 also ends with this when every try got SERVFAIL or REFUSED (it moves on
      // to the next server on those and reports the initial status when none is left).
      return "no usable answer (SERVFAIL, REFUSED or connection refused)";
    case ARES_EFORMERR:
      return "FORMERR";
    case ARES_ENOTIMP:
      return "NOTIMP";
    case ARES_EBADRESP:
      return "malformed answer";
    default:
      return ares_strerror(status);
  }
}

std::string lower_host(const char* host) {
  std::string name = host != nullptr ? host : "";
  if (name.ends_with('.')) name.pop_back();
  for (char& c : name)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return name;
}

TimePoint after_seconds(TimePoint now, uint32_t seconds) {
  return now + std::chrono::seconds(seconds);
}

// The addresses of one exchanger name, both families together.
struct HostAnswer {
  enum class Kind { kAddresses, kNoAddress, kNoSuchName, kTemporaryFailure };
  Kind kind = Kind::kTemporaryFailure;
  std::vector<std::string> ipv4;
  std::vector<std::string> ipv6;
  TimePoint expires{};  // kAddresses: by the smallest TTL of the address records
  std::string detail;   // the other kinds: why there is no address
};

}  // namespace

struct MxResolver::Impl {
  // What c-ares carries for one query and hands back to on_answer(): the lookup it belongs
  // to, by id, since a lookup can end (cancel_all) before its queries do. Owned by c-ares
  // between ares_query and the callback; on_answer() deletes it.
  struct QueryTag {
    Impl* impl;
    QueryKind kind;
    uint64_t lookup_id;
  };

  // One domain being looked up, with everyone waiting for it.
  struct DomainLookup {
    std::string domain;
    std::vector<Callback> waiters;
    bool implicit_mx = false;
    std::vector<Exchanger> exchangers;  // in order, addresses not filled in yet
    std::vector<HostAnswer> answers;    // per exchanger, valid once hosts_pending is 0
    size_t hosts_pending = 0;
    TimePoint expires{};  // the MX records' expiry; addresses can only shorten it
  };

  // One exchanger name whose A/AAAA queries are in flight, with the domains waiting for it.
  struct HostLookup {
    std::string name;
    int families_pending = 0;
    bool temporary_failure = false;
    bool all_nxdomain = true;
    std::vector<std::string> ipv4, ipv6;
    std::optional<uint32_t> ttl;
    std::string detail;
    std::vector<std::pair<uint64_t, size_t>> waiters;  // (domain lookup id, exchanger index)
  };

  struct QueuedQuery {
    QueryKind kind;
    uint64_t lookup_id;
    std::string name;
  };

  struct Completion {
    Callback done;
    std::shared_ptr<const Route> route;
  };

  Impl(ResolverOptions opts, SocketWatcher& w) : options(std::move(opts)), watcher(w) {
    rng.seed(options.seed != 0 ? options.seed : std::random_device{}());
  }

  // Destroying the channel first: its callbacks (ARES_EDESTRUCTION) and socket-state calls
  // run while everything else here is still alive.
  ~Impl() {
    if (channel != nullptr) ares_destroy(channel);
  }

  TimePoint now() const { return options.clock ? options.clock() : Clock::now(); }

  // ---- c-ares entry points
  static void on_socket_state(void* data, ares_socket_t fd, int readable, int writable) {
    auto* self = static_cast<Impl*>(data);
    if (readable || writable)
      self->watched.insert(fd);
    else
      self->watched.erase(fd);
    self->watcher.watch(fd, readable != 0, writable != 0);
  }

  static void on_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    std::unique_ptr<QueryTag> tag(static_cast<QueryTag*>(arg));
    if (status == ARES_EDESTRUCTION) return;  // ~Impl: nobody is waiting any more
    Impl* self = tag->impl;
    --self->in_flight;
    std::span<const unsigned char> answer;
    if (abuf != nullptr && alen > 0) answer = {abuf, static_cast<size_t>(alen)};
    if (tag->kind == QueryKind::kMx)
      self->on_mx_answer(tag->lookup_id, status, answer);
    else
      self->on_address_answer(tag->lookup_id, tag->kind, status, answer);
    self->send_queued();
  }

  void send_query(QueryKind kind, uint64_t lookup_id, const std::string& name) {
    if (in_flight >= options.max_queries_in_flight) {
      ++stats.queries_queued;
      queued.push_back({kind, lookup_id, name});
      return;
    }
    start_query(kind, lookup_id, name);
  }

  void send_queued() {
    while (!cancelling && in_flight < options.max_queries_in_flight && !queued.empty()) {
      QueuedQuery next = std::move(queued.front());
      queued.pop_front();
      start_query(next.kind, next.lookup_id, next.name);
    }
  }

  void start_query(QueryKind kind, uint64_t lookup_id, const std::string& name) {
    ++in_flight;
    ++stats.queries_sent;
    const int type = kind == QueryKind::kMx ? kTypeMx : kind == QueryKind::kA ? kTypeA : kTypeAaaa;
    ares_query(channel, name.c_str(), kClassIn, type, &Impl::on_answer,
               new QueryTag{this, kind, lookup_id});
  }

  // ---- Domains
  void resolve(std::string_view raw, Callback done) {
    auto name = normalize_domain(raw);
    if (!name) {
      ++stats.invalid_names;
      Route route;
      route.status = Route::Status::kNoSuchDomain;
      route.detail = "invalid domain name: " + name.error();
      route.expires = now();
      done(route);
      return;
    }
    if (auto hit = route_cache.find(*name); hit != route_cache.end()) {
      if (hit->second->expires > now()) {
        ++stats.cache_hits;
        std::shared_ptr<const Route> route = hit->second;  // done() may evict it
        deliver(done, route);
        return;
      }
      route_cache.erase(hit);
    }
    if (auto running = domain_ids.find(*name); running != domain_ids.end()) {
      ++stats.coalesced;
      ++pending;
      domains.at(running->second).waiters.push_back(std::move(done));
      return;
    }
    ++stats.cache_misses;
    ++pending;
    const uint64_t id = next_id++;
    DomainLookup& lookup = domains[id];
    lookup.domain = *name;
    lookup.waiters.push_back(std::move(done));
    domain_ids.emplace(*name, id);
    send_query(QueryKind::kMx, id, *name);
    deliver_ready();
  }

  void on_mx_answer(uint64_t id, int status, std::span<const unsigned char> answer) {
    auto it = domains.find(id);
    if (it == domains.end()) return;
    const std::string& domain = it->second.domain;
    if (status == ARES_SUCCESS) {
      ares_mx_reply* head = nullptr;
      const int parsed = ares_parse_mx_reply(answer.data(), static_cast<int>(answer.size()), &head);
      std::vector<MxRecord> records;
      for (ares_mx_reply* mx = head; mx != nullptr; mx = mx->next)
        records.push_back({lower_host(mx->host), mx->priority});
      if (head != nullptr) ares_free_data(head);
      if (records.size() > kMaxMxRecords) {
        std::nth_element(
            records.begin(), records.begin() + kMaxMxRecords, records.end(),
            [](const MxRecord& a, const MxRecord& b) { return a.preference < b.preference; });
        records.resize(kMaxMxRecords);
      }
      if (parsed != ARES_SUCCESS && parsed != ARES_ENODATA)
        return fail(id, domain + ": MX lookup: " + describe_status(parsed));
      if (records.empty()) return begin_implicit_mx(id);  // e.g. only a CNAME answered
      const TimePoint now_time = now();
      if (is_null_mx(records)) {
        Route route;
        route.status = Route::Status::kNullMx;
        route.detail = domain + ": null MX (RFC 7505): the domain accepts no mail";
        return finish(id, std::move(route), now_time + options.negative_ttl);
      }
      std::vector<MxRecord> ordered =
          order_mx_records(std::move(records), options.max_exchangers, rng);
      if (ordered.empty()) return fail(id, domain + ": MX lookup: no usable exchanger");
      it->second.expires = after_seconds(now_time, min_answer_ttl(answer, kTypeMx).value_or(0));
      return begin_exchangers(id, ordered, false);
    }
    switch (status) {
      case ARES_ENODATA:
        return begin_implicit_mx(id);
      case ARES_ENOTFOUND: {
        Route route;
        route.status = Route::Status::kNoSuchDomain;
        route.detail = domain + ": NXDOMAIN (the domain does not exist)";
        return finish(id, std::move(route), now() + options.negative_ttl);
      }
      case ARES_ECANCELLED:
        return fail(id, domain + ": " + cancel_reason);
      default:
        return fail(id, domain + ": MX lookup: " + describe_status(status));
    }
  }

  void begin_implicit_mx(uint64_t id) {
    DomainLookup& lookup = domains.at(id);
    lookup.expires = now() + options.max_ttl;
    begin_exchangers(id, {{lookup.domain, 0}}, true);
  }

  // Looks up (or takes from the cache) the addresses of every exchanger of domain `id`.
  void begin_exchangers(uint64_t id, const std::vector<MxRecord>& ordered, bool implicit_mx) {
    DomainLookup& lookup = domains.at(id);
    lookup.implicit_mx = implicit_mx;
    lookup.answers.resize(ordered.size());
    const TimePoint now_time = now();
    std::vector<std::pair<uint64_t, std::string>> to_send;
    for (size_t i = 0; i < ordered.size(); ++i) {
      const std::string& host = ordered[i].host;
      lookup.exchangers.push_back({host, ordered[i].preference, {}});
      if (auto hit = host_cache.find(host); hit != host_cache.end()) {
        if (hit->second.expires > now_time) {
          ++stats.host_cache_hits;
          lookup.answers[i] = hit->second;
          continue;
        }
        host_cache.erase(hit);
      }
      ++lookup.hosts_pending;
      if (auto running = host_ids.find(host); running != host_ids.end()) {
        hosts.at(running->second).waiters.emplace_back(id, i);
        continue;
      }
      const uint64_t host_id = next_id++;
      HostLookup& host_lookup = hosts[host_id];
      host_lookup.name = host;
      host_lookup.families_pending = options.families == ResolverOptions::Families::kBoth ? 2 : 1;
      host_lookup.waiters.emplace_back(id, i);
      host_ids.emplace(host, host_id);
      to_send.emplace_back(host_id, host);
    }
    if (lookup.hosts_pending == 0) return finish_exchangers(id);
    // From here `lookup` may be gone: an answer can arrive inside ares_query.
    for (const auto& [host_id, host] : to_send) {
      if (options.families != ResolverOptions::Families::kIpv6Only)
        send_query(QueryKind::kA, host_id, host);
      if (options.families != ResolverOptions::Families::kIpv4Only)
        send_query(QueryKind::kAaaa, host_id, host);
    }
  }

  void on_address_answer(uint64_t host_id, QueryKind kind, int status,
                         std::span<const unsigned char> answer) {
    auto it = hosts.find(host_id);
    if (it == hosts.end()) return;
    HostLookup& host = it->second;
    const char* family = kind == QueryKind::kA ? "A" : "AAAA";
    if (status == ARES_SUCCESS) {
      status = collect_addresses(host, kind, answer);
      if (status != ARES_SUCCESS && status != ARES_ENODATA) {
        host.temporary_failure = true;
        host.detail = std::string(family) + ": " + describe_status(status);
      }
      host.all_nxdomain = false;
    } else if (status == ARES_ENODATA) {
      host.all_nxdomain = false;
    } else if (status == ARES_ECANCELLED) {
      host.temporary_failure = true;
      host.detail = cancel_reason;
    } else if (status != ARES_ENOTFOUND) {
      host.temporary_failure = true;
      host.detail = std::string(family) + ": " + describe_status(status);
    }
    if (--host.families_pending > 0) return;

    HostAnswer result;
    const TimePoint now_time = now();
    if (!host.ipv4.empty() || !host.ipv6.empty()) {
      result.kind = HostAnswer::Kind::kAddresses;
      result.ipv4 = std::move(host.ipv4);
      result.ipv6 = std::move(host.ipv6);
      result.expires = after_seconds(now_time, host.ttl.value_or(0));
      // With one family failed the answer is incomplete: use it, do not keep it.
      if (!host.temporary_failure && result.expires > now_time) {
        make_room(host_cache, now_time);
        host_cache.insert_or_assign(host.name, result);
      }
    } else if (host.temporary_failure) {
      result.kind = HostAnswer::Kind::kTemporaryFailure;
      result.detail = std::move(host.detail);
    } else if (host.all_nxdomain) {
      result.kind = HostAnswer::Kind::kNoSuchName;
      result.detail = "NXDOMAIN";
    } else {
      result.kind = HostAnswer::Kind::kNoAddress;
      result.detail = "no address record";
    }
    std::vector<std::pair<uint64_t, size_t>> waiters = std::move(host.waiters);
    host_ids.erase(host.name);
    hosts.erase(it);
    for (const auto& [domain_id, index] : waiters) {
      auto domain = domains.find(domain_id);
      if (domain == domains.end()) continue;
      domain->second.answers[index] = result;
      if (--domain->second.hosts_pending == 0) finish_exchangers(domain_id);
    }
  }

  // Appends the addresses of an A/AAAA answer to `host`; an ares status.
  int collect_addresses(HostLookup& host, QueryKind kind, std::span<const unsigned char> answer) {
    hostent* ignored = nullptr;
    int count = kMaxAddressesPerFamily;
    char text[INET6_ADDRSTRLEN];
    int status;
    if (kind == QueryKind::kA) {
      ares_addrttl records[kMaxAddressesPerFamily];
      status = ares_parse_a_reply(answer.data(), static_cast<int>(answer.size()), &ignored, records,
                                  &count);
      for (int i = 0; status == ARES_SUCCESS && i < count; ++i) {
        if (inet_ntop(AF_INET, &records[i].ipaddr, text, sizeof text) == nullptr) continue;
        host.ipv4.emplace_back(text);
        note_ttl(host, records[i].ttl);
      }
    } else {
      ares_addr6ttl records[kMaxAddressesPerFamily];
      status = ares_parse_aaaa_reply(answer.data(), static_cast<int>(answer.size()), &ignored,
                                     records, &count);
      for (int i = 0; status == ARES_SUCCESS && i < count; ++i) {
        if (inet_ntop(AF_INET6, &records[i].ip6addr, text, sizeof text) == nullptr) continue;
        host.ipv6.emplace_back(text);
        note_ttl(host, records[i].ttl);
      }
    }
    if (ignored != nullptr) ares_free_hostent(ignored);
    return status;
  }

  static void note_ttl(HostLookup& host, int ttl) {
    const uint32_t seconds = ttl > 0 ? static_cast<uint32_t>(ttl) : 0;
    host.ttl = host.ttl ? std::min(*host.ttl, seconds) : seconds;
  }

  // Every exchanger of domain `id` has its answer: build the route.
  void finish_exchangers(uint64_t id) {
    DomainLookup& lookup = domains.at(id);
    Route route;
    TimePoint expires = lookup.expires;
    std::string skipped;
    bool any_temporary = false;
    for (size_t i = 0; i < lookup.exchangers.size(); ++i) {
      Exchanger& exchanger = lookup.exchangers[i];
      HostAnswer& answer = lookup.answers[i];
      if (answer.kind != HostAnswer::Kind::kAddresses) {
        any_temporary |= answer.kind == HostAnswer::Kind::kTemporaryFailure;
        skipped += "; " + exchanger.name + ": " + answer.detail;
        continue;
      }
      auto& first = options.prefer_ipv6 ? answer.ipv6 : answer.ipv4;
      auto& second = options.prefer_ipv6 ? answer.ipv4 : answer.ipv6;
      exchanger.addresses = first;
      exchanger.addresses.insert(exchanger.addresses.end(), second.begin(), second.end());
      expires = std::min(expires, answer.expires);
      route.exchangers.push_back(std::move(exchanger));
    }
    const std::string& domain = lookup.domain;
    const TimePoint now_time = now();
    if (!route.exchangers.empty()) {
      route.status = Route::Status::kOk;
      route.detail = domain + ": " + (lookup.implicit_mx ? "no MX, implicit MX " : "MX ");
      for (size_t i = 0; i < route.exchangers.size(); ++i)
        route.detail += (i ? ", " : "") + route.exchangers[i].name;
      route.detail += skipped;
      return finish(id, std::move(route), std::min(expires, now_time + options.max_ttl));
    }
    if (lookup.implicit_mx && !any_temporary) {
      route.status = Route::Status::kNoSuchDomain;
      route.detail = domain + ": no MX record and no address record";
      return finish(id, std::move(route), now_time + options.negative_ttl);
    }
    fail(id, domain + ": no exchanger has an address" + skipped);
  }

  void fail(uint64_t id, std::string detail) {
    ++stats.failures;
    Route route;
    route.status = Route::Status::kTemporaryFailure;
    route.detail = std::move(detail);
    finish(id, std::move(route), now() + options.failure_ttl);
  }

  // Caches the route (when `expires` is still ahead) and queues it for every waiter.
  void finish(uint64_t id, Route route, TimePoint expires) {
    auto it = domains.find(id);
    assert(it != domains.end());
    DomainLookup& lookup = it->second;
    route.domain = lookup.domain;
    route.expires = expires;
    auto shared = std::make_shared<const Route>(std::move(route));
    const TimePoint now_time = now();
    if (expires > now_time) {
      make_room(route_cache, now_time);
      route_cache.insert_or_assign(lookup.domain, shared);
    }
    for (Callback& done : lookup.waiters) ready.push_back({std::move(done), shared});
    domain_ids.erase(lookup.domain);
    domains.erase(it);
  }

  // ---- Callbacks to the owner
  void deliver_ready() {
    while (!ready.empty()) {
      std::vector<Completion> batch = std::exchange(ready, {});
      for (Completion& completion : batch) {
        --pending;
        deliver(completion.done, completion.route);
      }
    }
  }

  // Each caller gets its own order of equally preferred exchangers, so that a cached route
  // still spreads the load.
  void deliver(const Callback& done, const std::shared_ptr<const Route>& route) {
    if (!has_equal_preferences(std::span<const Exchanger>(route->exchangers))) {
      done(*route);
      return;
    }
    Route copy = *route;
    shuffle_equal_preferences(std::span<Exchanger>(copy.exchangers), rng);
    done(copy);
  }

  // ---- Caches
  static TimePoint expiry_of(const std::shared_ptr<const Route>& route) { return route->expires; }
  static TimePoint expiry_of(const HostAnswer& answer) { return answer.expires; }

  template <typename Map>
  void make_room(Map& map, TimePoint now_time) {
    if (map.size() < options.max_cache_entries) return;
    std::erase_if(map, [&](const auto& entry) { return expiry_of(entry.second) <= now_time; });
    while (!map.empty() && map.size() >= options.max_cache_entries) map.erase(map.begin());
  }

  void cancel_all(std::string_view why) {
    cancel_reason = why.empty() ? "cancelled" : std::string(why);
    // Queued queries are dropped; their lookups end in the safety net below.
    queued.clear();
    cancelling = true;
    ares_cancel(channel);
    cancelling = false;
    // Every query has been called back, so every lookup has ended; this is a safety net.
    std::vector<uint64_t> left;
    for (const auto& [id, lookup] : domains) left.push_back(id);
    for (uint64_t id : left) fail(id, domains.at(id).domain + ": " + cancel_reason);
    hosts.clear();
    host_ids.clear();
    deliver_ready();
  }

  ResolverOptions options;
  SocketWatcher& watcher;
  ares_channel channel = nullptr;
  std::mt19937 rng;
  ResolverStats stats;
  size_t pending = 0;
  uint64_t next_id = 1;
  std::string cancel_reason = "cancelled";
  size_t in_flight = 0;     // queries handed to c-ares, not yet called back
  bool cancelling = false;  // inside ares_cancel(): start nothing
  std::deque<QueuedQuery> queued;

  std::unordered_set<int> watched;  // sockets c-ares has asked us to watch
  std::unordered_map<uint64_t, DomainLookup> domains;
  std::unordered_map<std::string, uint64_t> domain_ids;
  std::unordered_map<uint64_t, HostLookup> hosts;
  std::unordered_map<std::string, uint64_t> host_ids;
  std::unordered_map<std::string, std::shared_ptr<const Route>> route_cache;
  std::unordered_map<std::string, HostAnswer> host_cache;  // kAddresses answers only
  std::vector<Completion> ready;
};

std::expected<std::unique_ptr<MxResolver>, std::string> MxResolver::create(ResolverOptions options,
                                                                           SocketWatcher& watcher) {
  // Once per process; a function-local static makes it safe against concurrent create().
  static const int library = ares_library_init(ARES_LIB_INIT_ALL);
  if (library != ARES_SUCCESS)
    return std::unexpected(std::string("ares_library_init: ") + ares_strerror(library));
  if (options.tries < 1) return std::unexpected("ResolverOptions::tries must be at least 1");
  if (options.query_timeout.count() < 1)
    return std::unexpected("ResolverOptions::query_timeout must be at least 1 ms");
  if (options.max_exchangers < 1)
    return std::unexpected("ResolverOptions::max_exchangers must be at least 1");
  if (options.max_queries_in_flight < 1)
    return std::unexpected("ResolverOptions::max_queries_in_flight must be at least 1");
  if (options.max_cache_entries < 1)
    return std::unexpected("ResolverOptions::max_cache_entries must be at least 1");

  auto impl = std::make_unique<Impl>(std::move(options), watcher);
  const ResolverOptions& opts = impl->options;
  ares_options ares{};
  ares.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  ares.timeout = static_cast<int>(std::min<int64_t>(opts.query_timeout.count(), 1 << 30));
  ares.tries = opts.tries;
  ares.sock_state_cb = &Impl::on_socket_state;
  ares.sock_state_cb_data = impl.get();
  const int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
  if (int status = ares_init_options(&impl->channel, &ares, mask); status != ARES_SUCCESS) {
    impl->channel = nullptr;
    return std::unexpected(std::string("ares_init_options: ") + ares_strerror(status));
  }
  if (!opts.servers.empty()) {
    std::string csv;
    for (const std::string& server : opts.servers) {
      if (server.empty() || server.find_first_of(", ") != std::string::npos)
        return std::unexpected("bad DNS server \"" + server + "\"");
      csv += (csv.empty() ? "" : ",") + server;
    }
    if (int status = ares_set_servers_ports_csv(impl->channel, csv.c_str()); status != ARES_SUCCESS)
      return std::unexpected("bad DNS servers \"" + csv + "\": " + ares_strerror(status));
  }
  return std::unique_ptr<MxResolver>(new MxResolver(std::move(impl)));
}

MxResolver::MxResolver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MxResolver::~MxResolver() = default;

void MxResolver::resolve(std::string_view domain, Callback done) {
  impl_->resolve(domain, std::move(done));
}

void MxResolver::on_socket_ready(int fd, bool readable, bool writable) {
  // A late readiness report for a socket c-ares has closed (or whose number now belongs to
  // a new socket it has not asked about) is dropped; c-ares tolerates spurious ones.
  if (!impl_->watched.contains(fd)) return;
  ares_process_fd(impl_->channel, readable ? fd : ARES_SOCKET_BAD, writable ? fd : ARES_SOCKET_BAD);
  impl_->deliver_ready();
}

void MxResolver::on_timer() {
  ares_process_fd(impl_->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  impl_->deliver_ready();
}

std::optional<std::chrono::milliseconds> MxResolver::next_timeout() const {
  timeval tv{};
  if (ares_timeout(impl_->channel, nullptr, &tv) == nullptr) return std::nullopt;
  const int64_t ms = int64_t{tv.tv_sec} * 1000 + (tv.tv_usec + 999) / 1000;
  return std::chrono::milliseconds(std::max<int64_t>(ms, 0));
}

void MxResolver::cancel_all(std::string_view why) { impl_->cancel_all(why); }

ResolverStats MxResolver::stats() const { return impl_->stats; }

size_t MxResolver::pending() const { return impl_->pending; }

}  // namespace ringmail::dns

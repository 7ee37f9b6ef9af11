// The shard's MX routing: c-ares's sockets polled on the ring, routes waited for and
// turned into pools of exchangers.
#include "engine/shard.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "engine/completion_token.h"
#include "engine/shard_replies.h"

namespace ringmail::engine {

// ---------------------------------------------------------------------------- MX routing

void Shard::route_by_mx(ShardJob&& job) {
  if (!resolver_ && resolver_error_.empty()) {
    auto created = dns::MxResolver::create(options_.mx.resolver, *this);
    if (created) resolver_ = std::move(*created);
    else resolver_error_ = created.error();
  }
  if (!resolver_) {
    finish_locally(std::move(job.transaction), smtp::RecipientStatus::kDeferred,
                   local_reply(kBadDestination, "DNS resolver unavailable: " + resolver_error_),
                   site_without_pool(job.destination));
    return;
  }
  auto& waiting = mx_waiting_[job.destination_key];
  const bool first = waiting.empty();
  waiting.push_back(std::move(job.transaction));
  if (!first) {
    ++dns_joined_;  // the lookup for this domain is already on its way: no query
    publish_dns_totals();
    return;
  }
  // The callback may run before resolve() returns (a cached route): nothing here may be
  // used after the call. Only an answer that came later went to DNS and is timed (from
  // this loop turn to the answer's).
  resolving_ = true;
  resolver_->resolve(job.destination.mx_domain,
                     [this, destination = job.destination, asked = now_](const dns::Route& route) {
                       if (!resolving_ && !draining_) counters_.count_dns_lookup_duration(now_ - asked);
                       on_route(destination, route);
                     });
  resolving_ = false;
  publish_dns_totals();
}

SiteSlot& Shard::site_without_pool(const Destination& destination) {
  // Only a site that has a slot already (configured, or a pool of it): a list of dead
  // domains must not use up the names a shard tracks.
  return counters_.sites().existing_slot_or_other(destination.mx_domain);
}

void Shard::publish_dns_totals() {
  const dns::ResolverStats s = resolver_->stats();
  counters_.set_dns_totals(s.cache_misses, s.cache_hits + s.coalesced + dns_joined_, s.failures);
}

void Shard::on_route(const Destination& destination, const dns::Route& route) {
  if (resolver_) publish_dns_totals();
  auto node = mx_waiting_.extract(destination.key());
  if (node.empty()) return;
  std::vector<smtp::Transaction>& transactions = node.mapped();
  if (draining_) {
    for (auto& txn : transactions)
      give_up_not_attempted(std::move(txn), stop_reply(), true);
    return;
  }
  switch (route.status) {
    case dns::Route::Status::kOk: {
      DestinationPool& pool = pool_for_exchangers(route, destination);
      for (auto& txn : transactions) {
        if (pool.dead(now_)) {
          report_paused_domain(pool, txn);
          give_up_not_attempted(std::move(txn), pool.last_failure(), false, pool.site);
        } else {
          queue_or_park(pool, std::move(txn));
        }
      }
      activate(pool);
      return;
    }
    case dns::Route::Status::kNullMx:
      for (auto& txn : transactions)
        finish_locally(std::move(txn), smtp::RecipientStatus::kBounced,
                       local_reply({5, 1, 10}, route.domain + " accepts no mail (null MX, RFC 7505)"),
                       site_without_pool(destination));
      return;
    case dns::Route::Status::kNoSuchDomain:
      for (auto& txn : transactions)
        finish_locally(std::move(txn), smtp::RecipientStatus::kBounced,
                       local_reply({5, 1, 2}, "no such domain: " + route.detail),
                       site_without_pool(destination));
      return;
    case dns::Route::Status::kTemporaryFailure:
      for (auto& txn : transactions)
        finish_locally(std::move(txn), smtp::RecipientStatus::kDeferred,
                       local_reply({4, 4, 3}, "DNS lookup failed: " + route.detail),
                       site_without_pool(destination));
      return;
  }
}

DestinationPool& Shard::pool_for_exchangers(const dns::Route& route, const Destination& destination) {
  const uint16_t port = destination.port;
  // Domains whose exchanger sets are identical share one pool (and so its limits): the
  // key lists the exchangers sorted, since equal preferences come shuffled per domain.
  std::vector<std::pair<uint16_t, std::string>> names;
  for (const dns::Exchanger& x : route.exchangers) names.emplace_back(x.preference, x.name);
  std::sort(names.begin(), names.end());
  std::string key = "mx[";
  for (auto& [preference, name] : names) key += std::to_string(preference) + " " + name + ",";
  key += "]:" + std::to_string(port);
  if (destination.security_profile != 0) key += "/s" + std::to_string(destination.security_profile);
  auto it = pools_.find(key);
  if (it != pools_.end()) {
    // Domains sharing exchangers share a pool and so its site; a configured domain names
    // it rather than whichever domain happened to make it (counts so far stay there).
    DestinationPool& pool = *it->second;
    SiteCounters& sites = counters_.sites();
    if (!sites.is_configured(pool.site->name()) && sites.is_configured(destination.mx_domain))
      pool.site = &sites.slot_for(destination.mx_domain);
    return pool;
  }
  std::vector<PoolHost> hosts;
  for (const dns::Exchanger& x : route.exchangers)
    for (const std::string& address : x.addresses) {
      PoolHost h;
      h.address = address;
      h.tls_name = x.name;
      h.preference = x.preference;
      hosts.push_back(std::move(h));
    }
  Destination identity;
  identity.host = key;
  identity.port = port;
  identity.security_profile = destination.security_profile;
  identity.mx_domain = destination.mx_domain;  // marks an MX pool (see security_for)
  auto pool = std::make_unique<DestinationPool>(std::move(identity), std::move(hosts), options_.pool);
  pool->site = &counters_.sites().slot_for(destination.mx_domain);
  DestinationPool& made = *pools_.emplace(std::move(key), std::move(pool)).first->second;
  counters_.set_destination_pools(pools_.size());
  return made;
}

void Shard::watch(int fd, bool readable, bool writable) {
  const unsigned events = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
  auto it = dns_sockets_.find(fd);
  if (it != dns_sockets_.end() && it->second.armed && it->second.events != events) {
    // The interest changed (or the socket is about to be closed): take the old poll
    // back; its completion, if any, no longer matches a generation and is dropped.
    io_uring_sqe* sqe = ring_.sqe();
    io_uring_prep_poll_remove(
        sqe, CompletionToken{OpKind::kDnsPoll, uint32_t(fd), it->second.generation}.encode());
    io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kCancel, UINT32_MAX, 0}.encode());
    it->second.armed = false;
  }
  if (events == 0) {
    if (it != dns_sockets_.end()) dns_sockets_.erase(it);
    return;
  }
  DnsSocket& socket = dns_sockets_[fd];
  socket.events = events;
  if (!socket.armed) arm_dns_poll(fd);
}

void Shard::arm_dns_poll(int fd) {
  DnsSocket& socket = dns_sockets_[fd];
  socket.generation = ++dns_generation_ & CompletionToken::kGenerationMask;
  socket.armed = true;
  io_uring_sqe* sqe = ring_.sqe();
  io_uring_prep_poll_add(sqe, fd, socket.events);
  io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kDnsPoll, uint32_t(fd), socket.generation}.encode());
}

void Shard::on_dns_poll(const io_uring_cqe& cqe, const CompletionToken& token) {
  const int fd = int(token.slot);
  auto it = dns_sockets_.find(fd);
  if (it == dns_sockets_.end() || !it->second.armed || it->second.generation != token.generation)
    return;  // a poll taken back, for a socket closed or re-watched since
  it->second.armed = false;
  if (!resolver_) return;
  const int revents = cqe.res < 0 ? POLLERR : cqe.res;
  // Errors and hang-ups are reported as readable, so c-ares reads and sees them.
  resolver_->on_socket_ready(fd, revents & (POLLIN | POLLERR | POLLHUP), revents & POLLOUT);
  // The resolver may have changed or dropped its interest meanwhile (through watch()).
  it = dns_sockets_.find(fd);
  if (it != dns_sockets_.end() && !it->second.armed && it->second.events != 0) arm_dns_poll(fd);
}

}  // namespace ringmail::engine

#include "engine/destination_pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>

namespace ringmail::engine {

namespace {

// Hosts are numeric here: names are resolved before work reaches a pool, because a
// blocking lookup on a shard would stall every connection it serves.
PoolHost make_host(std::string address, std::string tls_name, uint16_t port) {
  PoolHost h;
  h.address = std::move(address);
  h.tls_name = std::move(tls_name);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&h.sockaddr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&h.sockaddr);
  if (inet_pton(AF_INET, h.address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    h.sockaddr_length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, h.address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    h.sockaddr_length = sizeof(sockaddr_in6);
  }
  return h;
}

}  // namespace

DestinationPool::DestinationPool(Destination destination, const PoolLimits& limits)
    : destination_(std::move(destination)), limits_(limits) {
  hosts_.push_back(make_host(destination_.host, destination_.tls_name, destination_.port));
  tokens_ = limits_.messages_per_second > 0 ? limits_.messages_per_second : 0;
}

DestinationPool::DestinationPool(Destination identity, std::vector<PoolHost> hosts,
                                 const PoolLimits& limits)
    : destination_(std::move(identity)), limits_(limits) {
  for (PoolHost& h : hosts) {
    hosts_.push_back(make_host(std::move(h.address), std::move(h.tls_name), destination_.port));
    hosts_.back().preference = h.preference;
  }
  tokens_ = limits_.messages_per_second > 0 ? limits_.messages_per_second : 0;
}

bool DestinationPool::address_valid() const {
  return std::any_of(hosts_.begin(), hosts_.end(), [](const PoolHost& h) { return h.sockaddr_length != 0; });
}

bool DestinationPool::usable(size_t index, Clock::time_point now) {
  PoolHost& h = hosts_[index];
  if (h.sockaddr_length == 0) return false;
  if (h.consecutive_failures < failures_to_set_aside()) return true;
  if (now < h.set_aside_until) return false;
  h.consecutive_failures = failures_to_set_aside() - 1;  // a probe: one more failure sets it aside again
  return true;
}

std::optional<size_t> DestinationPool::pick_host(Clock::time_point now) {
  std::optional<size_t> best;
  size_t candidates = 0;
  for (size_t i = 0; i < hosts_.size(); ++i) {
    if (best && hosts_[i].preference != hosts_[*best].preference) break;
    if (!usable(i, now)) continue;
    if (!best) best = i;
    ++candidates;
  }
  if (!best || candidates == 1) return best;
  // Several usable hosts share the best preference: take them in turn.
  size_t skip = next_turn_++ % candidates;
  for (size_t i = *best; i < hosts_.size(); ++i) {
    if (hosts_[i].preference != hosts_[*best].preference) break;
    if (hosts_[i].sockaddr_length == 0 || hosts_[i].consecutive_failures >= failures_to_set_aside()) continue;
    if (skip-- == 0) return i;
  }
  return best;
}

bool DestinationPool::any_host_set_aside(Clock::time_point now) const {
  for (const PoolHost& h : hosts_)
    if (h.consecutive_failures >= failures_to_set_aside() && now < h.set_aside_until) return true;
  return false;
}

std::optional<size_t> DestinationPool::best_usable_host(Clock::time_point now) {
  for (size_t i = 0; i < hosts_.size(); ++i)
    if (usable(i, now)) return i;
  return std::nullopt;
}

bool DestinationPool::failing(Clock::time_point now) {
  auto next = best_usable_host(now);
  return next && hosts_[*next].consecutive_failures > 0;
}

void DestinationPool::record_connection_ready(size_t host) {
  hosts_[host].consecutive_failures = 0;
  proven_ = true;
}

void DestinationPool::record_connection_failure(size_t host, const smtp::Reply& why, Clock::time_point now) {
  PoolHost& h = hosts_[host];
  ++h.consecutive_failures;
  last_failure_ = why;
  if (h.consecutive_failures >= failures_to_set_aside()) h.set_aside_until = now + pause();
  if (dead(now)) proven_ = false;  // after the pause, slow start again
}

void DestinationPool::mark_down(const smtp::Reply& why, Clock::time_point now) {
  last_failure_ = why;
  proven_ = false;
  for (PoolHost& h : hosts_) {
    h.consecutive_failures = failures_to_set_aside();
    h.set_aside_until = now + pause();
  }
}

Clock::time_point DestinationPool::probe_time() const {
  Clock::time_point earliest = Clock::time_point::max();
  for (const PoolHost& h : hosts_)
    if (h.sockaddr_length != 0) earliest = std::min(earliest, h.set_aside_until);
  return earliest;
}

void DestinationPool::refill(Clock::time_point now) {
  if (tokens_updated_ == Clock::time_point{}) tokens_updated_ = now;
  double elapsed = std::chrono::duration<double>(now - tokens_updated_).count();
  // At least one token fits, or a rate below 1/s could never send anything.
  tokens_ = std::min(std::max(1.0, limits_.messages_per_second),
                     tokens_ + elapsed * limits_.messages_per_second);
  tokens_updated_ = now;
}

bool DestinationPool::take_send_token(Clock::time_point now) {
  if (limits_.messages_per_second <= 0) return true;
  refill(now);
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

Clock::time_point DestinationPool::next_token_time(Clock::time_point now) const {
  if (limits_.messages_per_second <= 0 || queue.empty()) return Clock::time_point::max();
  // The bucket as it stands now, not at its last refill (only take_send_token refills):
  // a pool whose connections are all busy takes no token, and a due time computed from
  // the stale bucket would lie in the past and wake the shard on every turn.
  const double elapsed = tokens_updated_ == Clock::time_point{}
                             ? 0.0
                             : std::chrono::duration<double>(now - tokens_updated_).count();
  const double tokens = std::min(std::max(1.0, limits_.messages_per_second),
                                 tokens_ + elapsed * limits_.messages_per_second);
  if (tokens >= 1) return Clock::time_point::max();  // a connection's next event takes it
  const double wait = (1 - tokens) / limits_.messages_per_second;
  // Rounded up: a wake a tick early would find the bucket just short of a token.
  return now + std::chrono::ceil<Clock::duration>(std::chrono::duration<double>(wait));
}

void DestinationPool::note_finished(Clock::time_point now) {
  if (rate_window_start_ == Clock::time_point{}) rate_window_start_ = now;
  ++finished_in_window_;
  const Clock::duration elapsed = now - rate_window_start_;
  if (elapsed >= kRateWindow) {
    finish_rate_ = double(finished_in_window_) / std::chrono::duration<double>(elapsed).count();
    rate_window_start_ = now;
    finished_in_window_ = 0;
  }
}

Clock::duration DestinationPool::park_for(Clock::time_point now) {
  double rate = finish_rate_;
  const double in_window = std::chrono::duration<double>(now - rate_window_start_).count();
  if (rate_window_start_ != Clock::time_point{} && in_window >= 0.5)
    rate = std::max(rate, double(finished_in_window_) / in_window);
  // Nothing finished yet (a server slow to greet): assume one transaction a second per
  // connection, which is slow, so the estimate errs towards coming back too soon.
  if (rate <= 0) rate = std::max(1.0, double(connections.size()));
  const double ahead = double(queue.size() + parked_in_backlog_++);
  const double seconds = std::clamp(ahead / rate, limits_.max_backlog.count(), 3600.0);
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace ringmail::engine

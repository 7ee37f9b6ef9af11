#include "engine/destination_pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>

namespace ringmail::engine {

DestinationPool::DestinationPool(Destination destination, const PoolLimits& limits)
    : destination_(std::move(destination)), limits_(limits) {
  // Hosts are numeric here: names are resolved before work reaches a shard, because a
  // blocking lookup on a shard would stall every connection it serves.
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address_);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address_);
  if (inet_pton(AF_INET, destination_.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(destination_.port);
    address_length_ = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, destination_.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(destination_.port);
    address_length_ = sizeof(sockaddr_in6);
  }
  tokens_ = limits_.messages_per_second > 0 ? limits_.messages_per_second : 0;
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
  if (limits_.messages_per_second <= 0 || tokens_ >= 1 || queue.empty())
    return Clock::time_point::max();
  double wait = (1 - tokens_) / limits_.messages_per_second;
  auto due = tokens_updated_ +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait));
  return std::max(due, now);
}

void DestinationPool::record_connection_failure(const smtp::Reply& why, Clock::time_point now) {
  ++consecutive_failures_;
  last_failure_ = why;
  if (consecutive_failures_ >= kDeadAfterFailures) {
    // Down: defer its work at once until the probe time, then let one connection try
    // again (one more failure makes it dead for another interval).
    dead_until_ = now + kDeadProbeInterval;
  }
}

bool DestinationPool::dead(Clock::time_point now) {
  if (consecutive_failures_ < kDeadAfterFailures) return false;
  if (now < dead_until_) return true;
  consecutive_failures_ = kDeadAfterFailures - 1;  // probe: one connection may try
  return false;
}

}  // namespace ringmail::engine

#include "tests/dns/poll_loop.h"

#include <poll.h>

#include <algorithm>
#include <memory>

namespace ringmail::test {

void PollWatcher::watch(int fd, bool readable, bool writable) {
  calls_.push_back({fd, readable, writable});
  if (!readable && !writable)
    interest_.erase(fd);
  else
    interest_[fd] = {readable, writable};
}

bool PollWatcher::ever_writable() const {
  return std::any_of(calls_.begin(), calls_.end(), [](const Call& c) { return c.writable; });
}

bool run_until(dns::MxResolver& resolver, PollWatcher& watcher, const std::function<bool()>& done,
               std::chrono::milliseconds limit, std::chrono::milliseconds* max_wait_seen) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + limit;
  while (!done()) {
    const auto now = Clock::now();
    if (now >= deadline) return false;
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    if (auto timeout = resolver.next_timeout()) {
      if (max_wait_seen != nullptr) *max_wait_seen = std::max(*max_wait_seen, *timeout);
      wait = std::min(wait, *timeout);
    }
    std::vector<pollfd> fds;
    for (const auto& [fd, interest] : watcher.interest())
      fds.push_back(
          {fd,
           static_cast<short>((interest.readable ? POLLIN : 0) | (interest.writable ? POLLOUT : 0)),
           0});
    const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
    for (int i = 0; ready > 0 && i < static_cast<int>(fds.size()); ++i) {
      const short revents = fds[i].revents;
      if (revents == 0) continue;
      // An earlier callback of this round may have closed it; the resolver ignores fds it
      // does not watch, as the shard's late completions will be.
      resolver.on_socket_ready(fds[i].fd, (revents & (POLLIN | POLLERR | POLLHUP)) != 0,
                               (revents & POLLOUT) != 0);
    }
    if (auto timeout = resolver.next_timeout(); timeout && timeout->count() == 0)
      resolver.on_timer();
  }
  return true;
}

std::optional<dns::Route> resolve_and_wait(dns::MxResolver& resolver, PollWatcher& watcher,
                                           std::string_view domain,
                                           std::chrono::milliseconds limit) {
  // Shared: if the callback comes after we gave up, it must not write to a dead frame.
  auto result = std::make_shared<std::optional<dns::Route>>();
  resolver.resolve(domain, [result](const dns::Route& route) { *result = route; });
  run_until(
      resolver, watcher, [&] { return result->has_value(); }, limit);
  return *result;
}

}  // namespace ringmail::test

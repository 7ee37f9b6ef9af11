// A poll()-based stand-in for the shard's ring in dns tests: it keeps the interest the
// resolver asks for through SocketWatcher and drives the resolver until a condition holds,
// every wait bounded.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

#include "dns/mx_resolver.h"

namespace ringmail::test {

class PollWatcher : public dns::SocketWatcher {
 public:
  struct Interest {
    bool readable = false;
    bool writable = false;
  };
  struct Call {
    int fd;
    bool readable;
    bool writable;
  };

  void watch(int fd, bool readable, bool writable) override;

  const std::map<int, Interest>& interest() const { return interest_; }
  const std::vector<Call>& calls() const { return calls_; }
  bool ever_writable() const;

 private:
  std::map<int, Interest> interest_;
  std::vector<Call> calls_;
};

// Polls the watched sockets, feeds readiness and timeouts to `resolver` until `done()` is
// true or `limit` has passed; returns done(). POLLERR/POLLHUP are reported as readable.
// `max_wait_seen`, when given, receives the longest wait next_timeout() asked for.
bool run_until(dns::MxResolver& resolver, PollWatcher& watcher, const std::function<bool()>& done,
               std::chrono::milliseconds limit, std::chrono::milliseconds* max_wait_seen = nullptr);

// resolve(domain), then run_until its callback has run; nullopt when it did not within
// `limit`.
std::optional<dns::Route> resolve_and_wait(
    dns::MxResolver& resolver, PollWatcher& watcher, std::string_view domain,
    std::chrono::milliseconds limit = std::chrono::milliseconds(5000));

}  // namespace ringmail::test

#include "app/relay_refresher.h"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "app/relay.h"

namespace ringmail::app {

std::chrono::milliseconds relay_refresh_interval() {
  const char* text = std::getenv("RINGMAIL_RELAY_REFRESH_MS");
  if (text == nullptr) return kRelayRefreshInterval;
  std::string_view value(text);
  uint64_t ms = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
  if (ec != std::errc() || end != value.data() + value.size() || ms == 0)
    return kRelayRefreshInterval;
  return std::chrono::milliseconds(std::max<uint64_t>(ms, 50));  // never a busy loop
}

RelayAddressTracker::Step RelayAddressTracker::on_lookup(
    const std::expected<std::vector<std::string>, std::string>& lookup) {
  Step step;
  // The one to use: the current address while the name still has it, else the first of
  // the same family (a partial answer must not move an IPv4 relay to IPv6), else the first.
  std::expected<std::string, std::string> result = std::unexpected(
      lookup ? std::string("no address") : lookup.error());
  if (lookup && !lookup->empty()) {
    const auto& all = *lookup;
    const bool v6 = address_.find(':') != std::string::npos;
    auto same = std::find(all.begin(), all.end(), address_);
    if (same == all.end())
      same = std::find_if(all.begin(), all.end(), [v6](const std::string& a) {
        return (a.find(':') != std::string::npos) == v6;
      });
    result = same != all.end() ? *same : all.front();
  }
  if (!result) {
    if (!failing_) {
      step.message = fmt::format("ringmail: relay {}: lookup failed ({}); still using {}", name_,
                                 result.error(), address_);
    }
    failing_ = true;
    return step;
  }
  const bool recovered = std::exchange(failing_, false);
  if (*result != address_) {
    step.message = fmt::format(
        "ringmail: relay {}: address changed from {} to {}; new "
        "transactions go to {}",
        name_, address_, *result, *result);
    address_ = *result;
    step.publish = address_;
  } else if (recovered) {
    step.message =
        fmt::format("ringmail: relay {}: lookup works again; still using {}", name_, address_);
  }
  return step;
}

struct RelayAddressRefresher::State {
  State(std::string name, std::string address,
        std::vector<std::shared_ptr<engine::LiveDestination>> targets_in, Options options)
      : name(name),
        tracker(std::move(name), std::move(address)),
        targets(std::move(targets_in)),
        interval(options.interval),
        lookup(std::move(options.lookup)),
        message(std::move(options.message)) {}

  // Set at construction, then read by the thread only.
  const std::string name;
  RelayAddressTracker tracker;
  const std::vector<std::shared_ptr<engine::LiveDestination>> targets;
  const std::chrono::milliseconds interval;
  const RelayHostLookup lookup;
  const RelayMessageSink message;

  mutable std::mutex mutex;
  mutable std::condition_variable wake;         // stop or refresh_now
  mutable std::condition_variable lookup_done;  // for wait_for_lookups
  bool stopping = false;                        // guarded by mutex, as are the three below
  bool refresh_requested = false;
  bool looking_up = false;
  uint64_t lookups = 0;
};

namespace {

void say_on_stderr(const std::string& line) {
  // One write: a line from this thread never interleaves with another thread's line.
  std::string text = line + '\n';
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, text.data(), text.size());
}

}  // namespace

RelayAddressRefresher::RelayAddressRefresher(
    std::string name, std::string address,
    std::vector<std::shared_ptr<engine::LiveDestination>> targets, Options options) {
  if (!options.lookup) options.lookup = lookup_relay_addresses;
  if (!options.message) options.message = say_on_stderr;
  state_ = std::make_shared<State>(std::move(name), std::move(address), std::move(targets),
                                   std::move(options));
  // The new thread inherits this mask; restored here before anything can throw past it.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  try {
    thread_ = std::thread(&RelayAddressRefresher::run, state_);
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

void RelayAddressRefresher::run(std::shared_ptr<State> s) {
  pthread_setname_np(pthread_self(), "ringmail-relay");
  std::unique_lock lock(s->mutex);
  for (;;) {
    s->wake.wait_for(lock, s->interval, [&] { return s->stopping || s->refresh_requested; });
    if (s->stopping) return;
    s->refresh_requested = false;
    s->looking_up = true;
    lock.unlock();
    auto result = s->lookup(s->name);  // blocking, and nothing held meanwhile
    lock.lock();
    s->looking_up = false;
    if (s->stopping) return;  // possibly detached by now: publish and say nothing
    RelayAddressTracker::Step step = s->tracker.on_lookup(result);
    if (step.publish) {
      for (const auto& target : s->targets) {
        engine::Destination d = target->get();  // this thread is its only writer
        d.host = *step.publish;
        target->set(std::move(d));
      }
    }
    ++s->lookups;
    s->lookup_done.notify_all();
    if (step.message) {
      // Unlocked: a slow stderr must not hold up stop(), which joins an idle thread.
      lock.unlock();
      s->message(*step.message);
      lock.lock();
    }
  }
}

void RelayAddressRefresher::refresh_now() {
  {
    std::lock_guard lock(state_->mutex);
    state_->refresh_requested = true;
  }
  state_->wake.notify_all();
}

uint64_t RelayAddressRefresher::lookups() const {
  std::lock_guard lock(state_->mutex);
  return state_->lookups;
}

bool RelayAddressRefresher::wait_for_lookups(uint64_t count,
                                             std::chrono::milliseconds timeout) const {
  std::unique_lock lock(state_->mutex);
  return state_->lookup_done.wait_for(lock, timeout, [&] { return state_->lookups >= count; });
}

void RelayAddressRefresher::stop() {
  if (!thread_.joinable()) return;
  bool in_lookup = false;
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
    in_lookup = state_->looking_up;
  }
  state_->wake.notify_all();
  // Not in a lookup: waiting on `wake`, or about to (every path back to it is short and
  // sees `stopping`): a prompt join. In a lookup: it may take seconds more; the thread
  // owns what it needs (State) and returns as soon as the lookup does.
  if (in_lookup)
    thread_.detach();
  else
    thread_.join();
}

}  // namespace ringmail::app

#include "app/engine_driver.h"

#include <fmt/format.h>
#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringmail::app {

StopSignals::StopSignals() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  sigaddset(&set_, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int StopSignals::wait(std::chrono::milliseconds timeout) {
  // A SIGHUP is handled and the wait goes on for what is left of `timeout`.
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    until - std::chrono::steady_clock::now())
                    .count();
    if (left < 0) left = 0;
    const timespec t{static_cast<time_t>(left / 1'000'000'000),
                     static_cast<long>(left % 1'000'000'000)};
    const int sig = sigtimedwait(&set_, nullptr, &t);
    if (sig == SIGINT || sig == SIGTERM) return sig;
    if (sig != SIGHUP) return 0;  // timed out (or EINTR)
    if (on_hangup_) on_hangup_();
    if (left == 0) return 0;
  }
}

bool drive_engine(engine::Engine& engine, StopSignals& signals, Console& console,
                  const DriveHooks& hooks, bool already_interrupted) {
  constexpr std::chrono::milliseconds kTick{200};
  bool interrupted = false;
  bool draining = false;
  while (!engine.wait_for(kTick)) {
    const int sig = signals.wait(std::chrono::milliseconds(0));
    if (sig != 0) {
      if (interrupted || already_interrupted) {
        console.print_line("ringmail: second signal: exiting without waiting");
        std::fflush(stdout);
        std::_Exit(128 + sig);  // as a shell reports death by that signal
      }
      interrupted = true;
      console.print_line(fmt::format(
          "ringmail: SIG{} received: draining, transactions in flight get up to {}s (send "
          "it again to abort)",
          sigabbrev_np(sig), hooks.drain_timeout_s));
      if (!draining && hooks.on_drain) hooks.on_drain();
      engine.request_drain();
      draining = true;
    }
    if (!draining && hooks.must_stop && hooks.must_stop()) {
      if (hooks.on_drain) hooks.on_drain();
      engine.request_drain();
      draining = true;
    }
    if (hooks.on_tick) hooks.on_tick();
  }
  return interrupted;
}

}  // namespace ringmail::app

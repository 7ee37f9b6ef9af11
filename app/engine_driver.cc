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
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  const timespec t{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  const int sig = sigtimedwait(&set_, nullptr, &t);
  if (sig == SIGHUP && on_hangup_) on_hangup_();
  return sig == SIGINT || sig == SIGTERM ? sig : 0;
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
      engine.request_drain();
      draining = true;
    }
    if (!draining && hooks.must_stop && hooks.must_stop()) {
      engine.request_drain();
      draining = true;
    }
    if (hooks.on_tick) hooks.on_tick();
  }
  return interrupted;
}

}  // namespace ringmail::app

// What every command that runs the engine shares: SIGINT/SIGTERM turned into a drain (a
// second one exits at once), SIGHUP into a reopened log, and the wait loop that ticks
// progress until the run ends.
#pragma once

#include <signal.h>

#include <chrono>
#include <functional>
#include <utility>

#include "app/console.h"
#include "engine/engine.h"

namespace ringmail::app {

// Blocks SIGINT and SIGTERM in the calling thread (construct it before any other thread
// exists, so all inherit the mask and a signal waits for us instead of killing the process
// mid-transaction) and ignores SIGPIPE (a peer closing early is an error on that write).
// SIGHUP is blocked too: it asks `on_hangup` (logrotate's "reopen your log"), rather than
// killing the process without a drain as its default action would.
class StopSignals {
 public:
  StopSignals();
  // A pending SIGINT/SIGTERM, waiting up to `timeout` for one; 0 when none came. A SIGHUP
  // meanwhile calls on_hangup, and the wait goes on.
  int wait(std::chrono::milliseconds timeout);
  const sigset_t& set() const { return set_; }
  // Called on the thread that waits, for each SIGHUP.
  void on_hangup(std::function<void()> hook) { on_hangup_ = std::move(hook); }

 private:
  sigset_t set_;
  std::function<void()> on_hangup_;
};

struct DriveHooks {
  std::function<void()> on_tick;            // about five times a second
  std::function<bool()> must_stop;          // true: drain now (e.g. the database failed)
  std::function<void()> on_drain;           // once, when a drain is asked for (any cause)
  double drain_timeout_s = 30;              // for the message only
};

// Waits until `engine` has finished. The first signal asks for a drain and is announced
// on `console`; a second one exits the process with status 130. Returns true when a
// signal (not must_stop) asked for the drain. `already_interrupted`: a signal came
// before this engine started, so the next one is the second.
bool drive_engine(engine::Engine& engine, StopSignals& signals, Console& console,
                  const DriveHooks& hooks, bool already_interrupted = false);

}  // namespace ringmail::app

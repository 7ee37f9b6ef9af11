// The sending engine: N shards (one thread and one io_uring ring each, sharing nothing)
// plus a feeder thread that pulls recipients from a JobSource, groups them into
// transactions per destination and hands each to the shard owning that destination.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "engine/delivery_counters.h"
#include "engine/engine_options.h"
#include "engine/seams.h"

namespace ringmail::engine {

class Engine {
 public:
  // `resolver` and `sink` must outlive the Engine. `sink` may be null.
  Engine(EngineOptions options, RouteResolver& resolver, OutcomeSink* sink);
  ~Engine();  // requests a drain and joins every thread
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts the shards and the feeder. `source` must outlive the run. Fails (exception,
  // start-up only) when a ring cannot be created.
  void start(JobSource& source);
  // Stop taking new work; transactions in flight get drain_timeout to finish, then
  // connections are closed and their recipients deferred. Thread-safe; idempotent.
  void request_drain();
  // The first shard failure (its io_uring failed), which drained the whole engine: every
  // recipient taken still got an outcome, but the run did not finish its work.
  std::optional<std::string> failure() const;
  // Waits up to `timeout` for the run to end (source exhausted and every transaction
  // finished, or drained). Returns true when it has ended.
  bool wait_for(std::chrono::milliseconds timeout);
  // Sum over shards; callable from any thread at any time.
  DeliverySnapshot snapshot() const;
  // Recipients the feeder has taken from the source so far.
  uint64_t recipients_taken() const;
  unsigned shard_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringmail::engine

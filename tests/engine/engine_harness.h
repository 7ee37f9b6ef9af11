// Runs the real engine against a real server on loopback for a test: a vector of
// recipients in, every transaction's outcome and the counters out, bounded in time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "smtp/message_body.h"

namespace ringmail::test {

class VectorJobSource final : public engine::JobSource {
 public:
  explicit VectorJobSource(std::vector<engine::DeliveryItem> items) : items_(std::move(items)) {}
  std::optional<engine::DeliveryItem> next() override {
    if (next_ >= items_.size()) return std::nullopt;
    return std::move(items_[next_++]);
  }

 private:
  std::vector<engine::DeliveryItem> items_;
  size_t next_ = 0;
};

// A source that follows new work (as `run` does as a service): items pushed by the
// test; waits for more until interrupted (at most 10 s a wait).
class FollowingSource final : public engine::JobSource {
 public:
  void push(std::vector<engine::DeliveryItem> items) {
    {
      std::lock_guard lock(mutex_);
      for (auto& i : items) items_.push_back(std::move(i));
    }
    wake_.notify_all();
  }
  std::optional<engine::DeliveryItem> next() override {
    std::lock_guard lock(mutex_);
    if (items_.empty()) return std::nullopt;
    engine::DeliveryItem item = std::move(items_.front());
    items_.pop_front();
    return item;
  }
  bool wait_for_more() override {
    std::unique_lock lock(mutex_);
    ++waits_;
    wake_.wait_for(lock, std::chrono::seconds(10), [&] { return interrupted_ || !items_.empty(); });
    return !interrupted_;
  }
  void interrupt() override {
    {
      std::lock_guard lock(mutex_);
      interrupted_ = true;
    }
    wake_.notify_all();
  }
  int waits() {
    std::lock_guard lock(mutex_);
    return waits_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<engine::DeliveryItem> items_;
  bool interrupted_ = false;
  int waits_ = 0;
};

// Polls `done` every 20 ms for at most `limit`.
template <typename F>
bool eventually(F done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// Domain dN.test (N a digit) goes to 127.0.0.1 at the Nth port: N destinations.
class PortPerDomain final : public engine::RouteResolver {
 public:
  explicit PortPerDomain(std::vector<uint16_t> ports) : ports_(std::move(ports)) {}
  engine::Destination route(std::string_view domain) override {
    const size_t n = size_t(domain[1] - '0');
    return engine::Destination{"127.0.0.1", ports_.at(n)};
  }

 private:
  std::vector<uint16_t> ports_;
};

class RecordingSink final : public engine::OutcomeSink {
 public:
  void on_transaction_finished(unsigned, const smtp::TransactionOutcome& outcome) override {
    std::lock_guard lock(mutex_);
    outcomes_.push_back(outcome);
  }
  std::vector<smtp::TransactionOutcome> outcomes() const {
    std::lock_guard lock(mutex_);
    return outcomes_;
  }
  // recipient address -> its final outcome
  std::map<std::string, smtp::RecipientOutcome> by_recipient() const {
    std::map<std::string, smtp::RecipientOutcome> out;
    std::lock_guard lock(mutex_);
    for (auto& o : outcomes_)
      for (size_t i = 0; i < o.recipients.size(); ++i)
        out[o.transaction.recipients[i]] = o.recipients[i];
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<smtp::TransactionOutcome> outcomes_;
};

// `count` recipients r000000@example.test ... sharing one small body.
inline std::vector<engine::DeliveryItem> make_items(size_t count, size_t body_bytes = 200,
                                                    std::string domain = "example.test") {
  std::string content = "Subject: test\r\nFrom: s@example.test\r\n\r\n";
  while (content.size() < body_bytes) content += "The quick brown fox jumps over the lazy dog.\r\n";
  auto body = std::make_shared<const std::string>(smtp::encode_data_body(content));
  std::vector<engine::DeliveryItem> items;
  items.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    char name[64];
    snprintf(name, sizeof name, "r%06zu@%s", i, domain.c_str());
    items.push_back({"sender@example.test", name, body});
  }
  return items;
}

struct EngineRun {
  engine::DeliverySnapshot counts;
  std::vector<smtp::TransactionOutcome> outcomes;
  std::map<std::string, smtp::RecipientOutcome> by_recipient;
  bool finished = false;  // false: the run hit the test's time limit
};

inline engine::EngineOptions test_options() {
  engine::EngineOptions options;
  options.shards = 1;
  options.helo_name = "ringmail.test";
  options.pool.max_connections = 4;
  options.pool.max_recipients_per_transaction = 1;
  options.pool.idle_timeout = engine::Seconds(2);
  options.timeouts.connect = engine::Seconds(5);
  options.timeouts.greeting = engine::Seconds(5);
  options.timeouts.command = engine::Seconds(5);
  options.timeouts.data_start = engine::Seconds(5);
  options.timeouts.data_block = engine::Seconds(5);
  options.timeouts.data_end = engine::Seconds(5);
  options.drain_timeout = engine::Seconds(5);
  return options;
}

// Runs `items` through an engine routed by `resolver` until done, or drains it after
// `limit`; returns the counters and every outcome.
inline EngineRun run_engine_with(engine::EngineOptions options, engine::RouteResolver& resolver,
                                 std::vector<engine::DeliveryItem> items,
                                 std::chrono::seconds limit = std::chrono::seconds(60)) {
  RecordingSink sink;
  VectorJobSource source(std::move(items));
  EngineRun run;
  {
    engine::Engine engine(options, resolver, &sink);
    engine.start(source);
    run.finished = engine.wait_for(std::chrono::duration_cast<std::chrono::milliseconds>(limit));
    if (!run.finished) {
      engine.request_drain();
      engine.wait_for(std::chrono::seconds(30));
    }
    run.counts = engine.snapshot();
  }
  run.outcomes = sink.outcomes();
  run.by_recipient = sink.by_recipient();
  return run;
}

// The same through one relay at host:port.
inline EngineRun run_engine(engine::EngineOptions options, const std::string& host, uint16_t port,
                            std::vector<engine::DeliveryItem> items,
                            std::chrono::seconds limit = std::chrono::seconds(60)) {
  engine::StaticRelayResolver resolver(engine::Destination{host, port});
  return run_engine_with(std::move(options), resolver, std::move(items), limit);
}

}  // namespace ringmail::test

// A source that follows new work (JobSource::wait_for_more, as `run` does as a service):
// what the feeder holds reaches a server while the source waits, a drain ends the wait,
// and the pools of destinations no longer in use are forgotten. Real smtp-sinks.
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <thread>

#include "tests/engine/engine_harness.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

using namespace std::chrono_literals;

// Items pushed by the test; waits for more until interrupted.
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
    wake_.wait_for(lock, 10s, [&] { return interrupted_ || !items_.empty(); });
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

// Domain dN.test goes to the Nth port.
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

// Polls `done` every 20 ms for at most `limit`.
template <typename F>
bool eventually(F done, std::chrono::milliseconds limit = 10s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

std::unique_ptr<SmtpSinkProcess> start_sink() {
  auto sink = SmtpSinkProcess::start({});
  if (!sink) ADD_FAILURE() << sink.error();
  return sink ? std::move(*sink) : nullptr;
}

TEST(FollowingSource, WorkGoesOutWhileTheSourceWaitsAndADrainEndsTheWait) {
  auto sink = start_sink();
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.pool.max_recipients_per_transaction = 100;  // the batcher would hold a lone item
  engine::StaticRelayResolver resolver(engine::Destination{"127.0.0.1", sink->port()});
  RecordingSink outcomes;
  FollowingSource source;
  engine::Engine engine(options, resolver, &outcomes);
  engine.start(source);
  source.push(make_items(1));
  // One receipt, delivered while the feeder waits for the next one.
  ASSERT_TRUE(eventually([&] { return outcomes.outcomes().size() == 1; }));
  EXPECT_GE(source.waits(), 1);
  EXPECT_FALSE(engine.wait_for(0ms));
  source.push(make_items(3, 200, "later.test"));
  ASSERT_TRUE(eventually([&] { return engine.snapshot().recipients_delivered == 4; }));
  engine.request_drain();
  EXPECT_TRUE(engine.wait_for(5s));  // the wait was interrupted, not timed out
  EXPECT_EQ(sink->recipients_received(), 4u);
}

TEST(FollowingSource, PoolsOfDestinationsNoLongerUsedAreForgotten) {
  std::vector<std::unique_ptr<SmtpSinkProcess>> sinks;
  std::vector<uint16_t> ports;
  for (int i = 0; i < 3; ++i) {
    sinks.push_back(start_sink());
    ASSERT_TRUE(sinks.back());
    ports.push_back(sinks.back()->port());
  }
  auto options = test_options();
  options.pool.idle_timeout = engine::Seconds(0.1);
  options.idle_pool_sweep = engine::Seconds(0.2);
  PortPerDomain resolver(ports);
  RecordingSink outcomes;
  FollowingSource source;
  engine::Engine engine(options, resolver, &outcomes);
  engine.start(source);
  for (const char* domain : {"d0.test", "d1.test", "d2.test"}) source.push(make_items(2, 200, domain));
  ASSERT_TRUE(eventually([&] { return engine.snapshot().recipients_delivered == 6; }));
  EXPECT_EQ(engine.snapshot().destination_pools, 3u);
  // Unused for a sweep interval, once their connections have closed: all three go.
  ASSERT_TRUE(eventually([&] { return engine.snapshot().destination_pools == 0; }));
  // A destination seen again gets a pool again.
  source.push(make_items(1, 200, "d1.test"));
  ASSERT_TRUE(eventually([&] { return engine.snapshot().recipients_delivered == 7; }));
  EXPECT_EQ(engine.snapshot().destination_pools, 1u);
  engine.request_drain();
  EXPECT_TRUE(engine.wait_for(5s));
  EXPECT_EQ(engine.snapshot().destination_pools, 0u);
  EXPECT_EQ(sinks[1]->recipients_received(), 3u);
}

}  // namespace
}  // namespace ringmail::test

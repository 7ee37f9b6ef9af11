// A source that follows new work (JobSource::wait_for_more, as `run` does as a service):
// what the feeder holds reaches a server while the source waits, a drain ends the wait,
// and the pools of destinations no longer in use are forgotten. Real smtp-sinks.
#include <gtest/gtest.h>

#include <map>

#include "tests/engine/engine_harness.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

using namespace std::chrono_literals;

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
  for (const char* domain : {"d0.test", "d1.test", "d2.test"})
    source.push(make_items(2, 200, domain));
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

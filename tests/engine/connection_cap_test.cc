// EngineOptions::max_connections_per_shard: a shard never holds more connections than its
// cap over all destinations, every destination still gets its mail, and an idle pooled
// connection makes room for a destination with work. Real scripted servers on loopback.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "tests/engine/engine_harness.h"
#include "tests/support/scripted_smtp_server.h"

namespace ringmail::test {
namespace {

using namespace std::chrono_literals;

// A server that holds each message 20 ms, so connections overlap.
std::unique_ptr<ScriptedSmtpServer> slowish_server() {
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, 20ms};
    return std::nullopt;
  };
  auto server = ScriptedSmtpServer::start(o);
  if (!server) ADD_FAILURE() << server.error();
  return server ? std::move(*server) : nullptr;
}

TEST(ConnectionCap, AShardHoldsNoMoreConnectionsThanItsCap) {
  std::vector<std::unique_ptr<ScriptedSmtpServer>> servers;
  std::vector<uint16_t> ports;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(slowish_server());
    ASSERT_TRUE(servers.back());
    ports.push_back(servers.back()->port());
  }
  auto options = test_options();
  options.pool.max_connections = 4;  // 12 at once without the cap
  options.max_connections_per_shard = 2;
  std::vector<engine::DeliveryItem> items;
  for (const char* domain : {"d0.test", "d1.test", "d2.test"})
    for (auto& item : make_items(20, 200, domain)) items.push_back(std::move(item));
  PortPerDomain resolver(ports);
  RecordingSink outcomes;
  VectorJobSource source(std::move(items));
  engine::Engine engine(options, resolver, &outcomes);
  engine.start(source);
  uint64_t most_open = 0;
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (!engine.wait_for(2ms) && std::chrono::steady_clock::now() < until) {
    const engine::DeliverySnapshot s = engine.snapshot();
    most_open = std::max(most_open, s.connections_opened - s.connections_closed);
  }
  ASSERT_TRUE(engine.wait_for(0ms));
  const engine::DeliverySnapshot s = engine.snapshot();
  EXPECT_EQ(s.recipients_delivered, 60u);
  EXPECT_EQ(s.connection_failures, 0u);
  EXPECT_LE(most_open, 2u);
  EXPECT_GT(most_open, 0u);
  for (auto& server : servers) EXPECT_EQ(server->messages().size(), 20u);
}

// At the cap, a destination with work does not wait for another's idle connection to
// time out: that connection is asked to QUIT to make room.
TEST(ConnectionCap, AnIdleConnectionMakesRoomForWork) {
  std::vector<std::unique_ptr<ScriptedSmtpServer>> servers;
  std::vector<uint16_t> ports;
  for (int i = 0; i < 2; ++i) {
    servers.push_back(slowish_server());
    ASSERT_TRUE(servers.back());
    ports.push_back(servers.back()->port());
  }
  auto options = test_options();
  options.max_connections_per_shard = 1;
  options.pool.idle_timeout = engine::Seconds(30);  // longer than the test may wait
  PortPerDomain resolver(ports);
  RecordingSink outcomes;
  FollowingSource source;
  engine::Engine engine(options, resolver, &outcomes);
  engine.start(source);
  source.push(make_items(1, 200, "d0.test"));
  ASSERT_TRUE(eventually([&] { return engine.snapshot().recipients_delivered == 1; }));
  source.push(make_items(1, 200, "d1.test"));  // d0's connection idles in its pool
  ASSERT_TRUE(eventually([&] { return engine.snapshot().recipients_delivered == 2; }, 5s));
  EXPECT_EQ(engine.snapshot().connections_opened, 2u);
  engine.request_drain();
  EXPECT_TRUE(engine.wait_for(5s));
  EXPECT_EQ(servers[1]->messages().size(), 1u);
}

}  // namespace
}  // namespace ringmail::test

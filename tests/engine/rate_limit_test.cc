// [pool] messages_per_second across many destinations: each rate-limited pool is woken
// when its next token is due (Shard::token_waits_), so every destination gets its work
// through at its own rate and none is forgotten while waiting. Real peers: one scripted
// server per destination on loopback.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <unordered_map>

#include "engine/domain_route_resolver.h"
#include "tests/engine/engine_harness.h"
#include "tests/support/scripted_smtp_server.h"

namespace ringmail::test {
namespace {

TEST(RateLimit, EveryRateLimitedDestinationDeliversAtItsRate) {
  constexpr size_t kDestinations = 12;
  constexpr size_t kPerDestination = 40;
  constexpr double kRate = 20;  // a burst of 20, then 20 a second: ~1 s per destination
  std::vector<std::unique_ptr<ScriptedSmtpServer>> servers;
  std::unordered_map<std::string, engine::Destination> routes;
  std::vector<engine::DeliveryItem> items;
  std::vector<std::vector<engine::DeliveryItem>> by_domain;
  for (size_t i = 0; i < kDestinations; ++i) {
    auto server = ScriptedSmtpServer::start({});
    ASSERT_TRUE(server) << server.error();
    const std::string domain = "d" + std::to_string(i) + ".test";
    routes.emplace(domain, engine::Destination{"127.0.0.1", (*server)->port()});
    servers.push_back(std::move(*server));
    by_domain.push_back(make_items(kPerDestination, 200, domain));
  }
  // Interleaved, so every pool has a queue waiting for tokens at the same time.
  for (size_t n = 0; n < kPerDestination; ++n)
    for (auto& list : by_domain) items.push_back(list[n]);

  auto o = test_options();
  o.pool.max_connections = 2;
  o.pool.max_recipients_per_transaction = 1;
  o.pool.messages_per_second = kRate;
  engine::DomainRouteResolver resolver(std::nullopt, std::move(routes), 25);
  RecordingSink sink;
  VectorJobSource source(std::move(items));
  engine::DeliverySnapshot counts;
  const auto start = std::chrono::steady_clock::now();
  bool finished = false;
  {
    engine::Engine engine(o, resolver, &sink);
    engine.start(source);
    finished = engine.wait_for(std::chrono::seconds(60));
    counts = engine.snapshot();
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(finished);
  EXPECT_EQ(counts.recipients_delivered, kDestinations * kPerDestination);
  for (auto& server : servers) EXPECT_EQ(server->messages().size(), kPerDestination);
  // The limit held: past the one-second burst, the other 20 of each destination needed
  // about a second more. (A lower bound: the rate's correctness, not a speed.)
  EXPECT_GE(elapsed, std::chrono::milliseconds(800));
}

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

// A rate-limited pool whose one connection is busy (a slow end of data) takes no token,
// so its bucket is not refilled; the wake-up must still be computed from the bucket as it
// stands now, or it lies in the past and the shard spins until the connection is free.
TEST(RateLimit, APoolWaitingOnABusyConnectionDoesNotSpin) {
  ScriptedSmtpServerOptions so;
  so.advertise_pipelining = false;  // one transaction per connection at a time
  so.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, std::chrono::milliseconds(2500)};
    return std::nullopt;
  };
  auto server = ScriptedSmtpServer::start(so);
  ASSERT_TRUE(server) << server.error();
  auto o = test_options();
  o.pool.max_connections = 1;
  o.pool.max_recipients_per_transaction = 1;
  o.pool.messages_per_second = 1;  // a burst of one: the second token is due at 1 s
  const double cpu_before = process_cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  auto run = run_engine(o, "127.0.0.1", (*server)->port(), make_items(2));
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu = process_cpu_seconds() - cpu_before;
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 2u);
  // ~5 s waiting on the server, 1.5 s of it with the second token due and the connection
  // busy: a spin there cost a core (≥ 1 s of CPU, half that on a loaded machine); waiting
  // costs next to nothing (the bound leaves room for sanitizers).
  EXPECT_GE(wall, 4.5);
  EXPECT_LT(cpu, 0.25) << "cpu " << cpu << " s over " << wall << " s";
}

}  // namespace
}  // namespace ringmail::test

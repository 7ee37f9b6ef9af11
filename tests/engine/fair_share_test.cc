// Fair sharing of a shard's connection cap: a destination busy with a long queue gives one
// connection back (QUIT after the transactions it holds) when another destination waits
// for a slot, and never when nobody waits. Real scripted servers on loopback.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <thread>
#include <string_view>
#include <vector>

#include "tests/engine/engine_harness.h"
#include "tests/support/scripted_smtp_server.h"

namespace ringmail::test {
namespace {

using namespace std::chrono_literals;

// Holds each message `per_message` before its 250, so a big batch keeps every
// connection busy for a while.
std::unique_ptr<ScriptedSmtpServer> server_with_delay(std::chrono::milliseconds per_message) {
  ScriptedSmtpServerOptions o;
  o.script = [per_message](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, per_message};
    return std::nullopt;
  };
  auto server = ScriptedSmtpServer::start(o);
  if (!server) ADD_FAILURE() << server.error();
  return server ? std::move(*server) : nullptr;
}

// How many times each recipient was given to the server (RCPT TO lines, all connections).
std::map<std::string, int> recipients_seen(const ScriptedSmtpServer& server) {
  std::map<std::string, int> seen;
  for (const ConnectionTranscript& t : server.transcripts())
    for (const std::string& line : t.commands)
      if (line.starts_with("RCPT TO:")) ++seen[line.substr(8)];
  return seen;
}

bool for_domain(const smtp::TransactionOutcome& o, std::string_view domain) {
  return !o.transaction.recipients.empty() && o.transaction.recipients.front().ends_with(domain);
}

// Of the outcomes of `busy_domain`, how many came after the first of `waiting_domain`'s:
// more than the busy destination's connections hold means its queue was not empty yet.
size_t busy_outcomes_after_waiter(const std::vector<smtp::TransactionOutcome>& outcomes,
                                  std::string_view busy_domain, std::string_view waiting_domain,
                                  size_t busy_total) {
  const auto waiter_done = std::find_if(outcomes.begin(), outcomes.end(),
                                        [&](const auto& o) { return for_domain(o, waiting_domain); });
  EXPECT_NE(waiter_done, outcomes.end()) << waiting_domain << " never finished";
  const auto before = size_t(std::count_if(outcomes.begin(), waiter_done,
                                           [&](const auto& o) { return for_domain(o, busy_domain); }));
  return busy_total - before;
}

// The server got `n` messages, each recipient exactly once: nothing lost or sent twice.
void expect_each_recipient_once(const ScriptedSmtpServer& server, size_t n) {
  EXPECT_EQ(server.messages().size(), n);
  const std::map<std::string, int> seen = recipients_seen(server);
  EXPECT_EQ(seen.size(), n);
  for (const auto& [recipient, times] : seen) EXPECT_EQ(times, 1) << recipient;
}

engine::EngineOptions capped_options() {
  auto options = test_options();
  options.max_connections_per_shard = 4;
  options.pool.max_connections = 4;
  // Longer than the test runs: any connection closed early was closed for another pool.
  options.pool.idle_timeout = engine::Seconds(30);
  return options;
}

TEST(FairShare, ABusyDestinationGivesAConnectionBackToAWaitingOne) {
  auto big = server_with_delay(20ms);
  auto small = server_with_delay(0ms);
  ASSERT_TRUE(big && small);
  constexpr size_t kBig = 600;  // about 3 s over 4 connections
  PortPerDomain resolver({big->port(), small->port()});
  RecordingSink sink;
  FollowingSource source;
  auto options = capped_options();
  // The small destination's connection, idle once its message is out, keeps its slot
  // until its idle timeout (no close-and-reopen for a trickle of mail); then the big one
  // takes it back.
  options.pool.idle_timeout = engine::Seconds(2);
  engine::Engine engine(options, resolver, &sink);
  engine.start(source);
  source.push(make_items(kBig, 200, "d0.test"));
  // The big destination holds the whole cap, every connection busy.
  ASSERT_TRUE(eventually([&] {
    return big->max_simultaneous_connections() == 4 && engine.snapshot().recipients_delivered >= 20;
  }));
  source.push(make_items(1, 200, "d1.test"));
  ASSERT_TRUE(eventually([&] { return engine.snapshot().recipients_delivered == kBig + 1; }, 60s));
  EXPECT_TRUE(small->wait_for_closed(1, 10s));
  const engine::DeliverySnapshot s = engine.snapshot();
  engine.request_drain();
  EXPECT_TRUE(engine.wait_for(10s));

  // The small destination was served while the big one still had work.
  const std::vector<smtp::TransactionOutcome> outcomes = sink.outcomes();
  ASSERT_EQ(outcomes.size(), kBig + 1);
  // More of the big one's outcomes came after than its 4 connections hold (2 each with
  // pipelining): its queue was not empty yet.
  EXPECT_GT(busy_outcomes_after_waiter(outcomes, "@d0.test", "@d1.test", kBig), 8u);
  // Nothing lost, deferred, retried or sent twice because a connection was given back.
  for (const smtp::TransactionOutcome& o : outcomes) {
    EXPECT_FALSE(o.not_attempted);
    for (const smtp::RecipientOutcome& r : o.recipients)
      EXPECT_EQ(r.status, smtp::RecipientStatus::kDelivered) << r.reply.text;
  }
  EXPECT_EQ(s.recipients_delivered, kBig + 1);
  EXPECT_EQ(s.recipients_deferred, 0u);
  EXPECT_EQ(s.recipients_not_attempted, 0u);
  EXPECT_EQ(s.connection_failures, 0u);
  expect_each_recipient_once(*big, kBig);
  EXPECT_EQ(small->messages().size(), 1u);
  EXPECT_EQ(small->connections_accepted(), 1u);
  // The big destination gave one back, then took a slot again once the small one was done.
  EXPECT_GE(big->connections_accepted(), 5u);
  // The server counts a connection until it reads its end, which may come after the
  // shard opened the next one in the freed slot: one more than the cap, at most.
  EXPECT_LE(big->max_simultaneous_connections(), 4u + 1);
}

// The waiter comes before the busy destination's connections are ready (no greeting yet):
// one of them carries its first transaction, then QUITs; nothing is lost or deferred.
TEST(FairShare, AConnectionNotReadyYetCanBeGivenBack) {
  auto big = server_with_delay(10ms);
  auto small = server_with_delay(0ms);
  ASSERT_TRUE(big && small);
  constexpr size_t kBig = 300;
  auto options = capped_options();
  // A destination not yet proven opens 3 connections at once: all of the cap.
  options.max_connections_per_shard = 3;
  std::vector<engine::DeliveryItem> items = make_items(kBig, 200, "d0.test");
  items.push_back(make_items(1, 200, "d1.test").front());
  PortPerDomain resolver({big->port(), small->port()});
  const EngineRun run = run_engine_with(options, resolver, std::move(items));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, kBig + 1);
  EXPECT_EQ(run.counts.recipients_deferred, 0u);
  EXPECT_EQ(run.counts.connection_failures, 0u);
  EXPECT_GT(busy_outcomes_after_waiter(run.outcomes, "@d0.test", "@d1.test", kBig), 8u);
  expect_each_recipient_once(*big, kBig);
  EXPECT_LE(big->max_simultaneous_connections(), 3u + 1);  // as above: the server's count lags
}

// Two destinations with long queues meet at an even share (2 + 2 of 4), and no
// connection goes back and forth between them.
TEST(FairShare, TwoBusyDestinationsShareTheCapWithoutChurn) {
  auto first = server_with_delay(20ms);
  auto second = server_with_delay(20ms);
  ASSERT_TRUE(first && second);
  constexpr size_t kEach = 300;
  PortPerDomain resolver({first->port(), second->port()});
  RecordingSink sink;
  FollowingSource source;
  engine::Engine engine(capped_options(), resolver, &sink);
  engine.start(source);
  source.push(make_items(kEach, 200, "d0.test"));
  ASSERT_TRUE(eventually([&] {
    return first->max_simultaneous_connections() == 4 && engine.snapshot().recipients_delivered >= 20;
  }));
  source.push(make_items(kEach, 200, "d1.test"));
  ASSERT_TRUE(eventually([&] { return engine.snapshot().recipients_delivered == 2 * kEach; }, 60s));
  engine.request_drain();
  EXPECT_TRUE(engine.wait_for(10s));
  const engine::DeliverySnapshot s = engine.snapshot();
  // The second ran alongside the first, not after it: many of its outcomes came before
  // the first's last one (more than a turn of the first's connections).
  const std::vector<smtp::TransactionOutcome> outcomes = sink.outcomes();
  ASSERT_EQ(outcomes.size(), 2 * kEach);
  const auto first_last = std::find_if(outcomes.rbegin(), outcomes.rend(),
                                       [](const auto& o) { return for_domain(o, "@d0.test"); });
  const auto second_alongside = size_t(std::count_if(
      first_last, outcomes.rend(), [](const auto& o) { return for_domain(o, "@d1.test"); }));
  EXPECT_GT(second_alongside, 8u);
  EXPECT_EQ(s.recipients_deferred, 0u);
  EXPECT_EQ(s.recipients_not_attempted, 0u);
  EXPECT_EQ(first->messages().size(), kEach);
  EXPECT_EQ(second->messages().size(), kEach);
  EXPECT_GE(second->max_simultaneous_connections(), 2u);
  // 4 + 2 given back and opened by the second; then whichever finishes first gives the
  // other its 2 again (4 + 4 in all). More would be connections taken back and forth.
  EXPECT_LE(first->connections_accepted() + second->connections_accepted(), 8u);
  EXPECT_LE(s.connections_opened, 8u);
}

// A destination with a trickle of mail beside a busy one: it gets a connection once and
// keeps it between its messages (idle less than a second), instead of closing it after
// each and taking one back from the busy destination for the next (a review measured 17
// connections for 20 trickled messages, and 20 for the busy one where 4 do).
TEST(FairShare, ATrickleKeepsItsConnectionInsteadOfChurning) {
  auto big = server_with_delay(20ms);
  auto small = server_with_delay(0ms);
  ASSERT_TRUE(big && small);
  constexpr size_t kBig = 600;
  constexpr size_t kTrickle = 8;
  PortPerDomain resolver({big->port(), small->port()});
  RecordingSink sink;
  FollowingSource source;
  engine::Engine engine(capped_options(), resolver, &sink);
  engine.start(source);
  source.push(make_items(kBig, 200, "d0.test"));
  ASSERT_TRUE(eventually([&] {
    return big->max_simultaneous_connections() == 4 && engine.snapshot().recipients_delivered >= 20;
  }));
  for (size_t i = 0; i < kTrickle; ++i) {
    source.push(make_items(1, 200, "d1.test"));
    std::this_thread::sleep_for(300ms);
  }
  ASSERT_TRUE(eventually([&] { return engine.snapshot().recipients_delivered == kBig + kTrickle; },
                         60s));
  engine.request_drain();
  EXPECT_TRUE(engine.wait_for(10s));
  EXPECT_EQ(small->messages().size(), kTrickle);
  EXPECT_LE(small->connections_accepted(), 2u);
  EXPECT_LE(big->connections_accepted(), 6u);
  expect_each_recipient_once(*big, kBig);
}

// A destination alone (it wants more connections than the cap allows) keeps every
// connection it has: there is nobody to give one to.
TEST(FairShare, APoolAloneNeverGivesConnectionsBack) {
  auto server = server_with_delay(5ms);
  ASSERT_TRUE(server);
  auto options = capped_options();
  options.pool.max_connections = 8;  // it waits for a slot itself, at the cap of 4
  PortPerDomain resolver({server->port()});
  const EngineRun run = run_engine_with(options, resolver, make_items(300, 200, "d0.test"));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 300u);
  EXPECT_EQ(run.counts.connections_opened, 4u);
  EXPECT_EQ(server->connections_accepted(), 4u);
  EXPECT_EQ(server->messages().size(), 300u);
}

}  // namespace
}  // namespace ringmail::test

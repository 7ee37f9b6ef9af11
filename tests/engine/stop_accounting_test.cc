// Every recipient the engine takes gets exactly one outcome when a shard stops early: a
// drain with transactions waiting for a slow DNS route, and a failed io_uring (injected
// with EngineOptions::fail_ring_after_submissions) with work queued on a pool, waiting
// for a route, and still arriving in the inbox.
#include <gtest/gtest.h>

#include <thread>

#include "engine/domain_route_resolver.h"
#include "tests/dns/scripted_dns_server.h"
#include "tests/engine/engine_harness.h"
#include "tests/support/scripted_smtp_server.h"

namespace ringmail::test {
namespace {

struct StoppedRun {
  engine::DeliverySnapshot counts;
  uint64_t taken = 0;
  bool finished = false;
  std::optional<std::string> failure;
  std::map<std::string, smtp::RecipientOutcome> by_recipient;
};

// A DNS server that never answers: MX lookups wait in the shard until their timeout.
std::unique_ptr<ScriptedDnsServer> silent_dns() {
  auto dns = ScriptedDnsServer::start();
  if (!dns) {
    ADD_FAILURE() << dns.error();
    return nullptr;
  }
  (*dns)->set_fallback(DnsReply{.action = DnsReply::Action::kSilent});
  return std::move(*dns);
}

engine::EngineOptions options_with_dns(const ScriptedDnsServer& dns) {
  auto o = test_options();
  o.mx.resolver.servers = {dns.address()};
  o.mx.resolver.families = dns::ResolverOptions::Families::kIpv4Only;
  o.mx.resolver.query_timeout = std::chrono::milliseconds(20000);  // outlasts the test
  o.mx.resolver.tries = 1;
  return o;
}

// Runs `items` and, when `drain_after` is set, drains after that long.
StoppedRun run(engine::EngineOptions options, engine::RouteResolver& resolver,
               std::vector<engine::DeliveryItem> items,
               std::optional<std::chrono::milliseconds> drain_after = std::nullopt) {
  RecordingSink sink;
  VectorJobSource source(std::move(items));
  StoppedRun r;
  {
    engine::Engine engine(options, resolver, &sink);
    engine.start(source);
    if (drain_after) {
      std::this_thread::sleep_for(*drain_after);
      engine.request_drain();
    }
    r.finished = engine.wait_for(std::chrono::seconds(30));
    r.counts = engine.snapshot();
    r.taken = engine.recipients_taken();
    r.failure = engine.failure();
  }
  r.by_recipient = sink.by_recipient();
  return r;
}

std::vector<engine::DeliveryItem> join(std::vector<engine::DeliveryItem> a,
                                       std::vector<engine::DeliveryItem> b) {
  for (auto& item : b) a.push_back(std::move(item));
  return a;
}

TEST(StopAccounting, DrainGivesBackTransactionsWaitingForARoute) {
  auto dns = silent_dns();
  ASSERT_TRUE(dns);
  engine::DomainRouteResolver resolver(std::nullopt, {}, 25);
  auto r = run(options_with_dns(*dns), resolver, make_items(10, 200, "slow.test"),
               std::chrono::milliseconds(300));
  ASSERT_TRUE(r.finished);
  EXPECT_FALSE(r.failure);  // a drain asked for is not a failure
  EXPECT_EQ(r.taken, 10u);
  EXPECT_EQ(r.counts.recipients_not_attempted, 10u);
  EXPECT_EQ(r.counts.recipients_finished(), r.taken);
  ASSERT_EQ(r.by_recipient.size(), 10u);
  for (auto& [rcpt, outcome] : r.by_recipient)
    EXPECT_EQ(outcome.reply.enhanced.to_string(), "4.3.2") << rcpt << ": " << outcome.reply.to_string();
}

// The drain timeout cuts connections that never got a greeting: their transactions reached
// no server, so they are not attempted (the queue puts them back without an attempt), not
// deferred, and are no messages.
TEST(StopAccounting, TheDrainTimeoutCutsSilentConnectionsAsNotAttempted) {
  ScriptedSmtpServerOptions so;
  so.never_answer = true;
  auto server = ScriptedSmtpServer::start(so);
  ASSERT_TRUE(server) << server.error();
  engine::DomainRouteResolver resolver(
      std::nullopt, {{"mute.test", engine::Destination{"127.0.0.1", (*server)->port()}}}, 25);
  auto o = test_options();
  o.pool.max_connections = 3;
  o.drain_timeout = engine::Seconds(0.3);
  auto r = run(o, resolver, make_items(30, 200, "mute.test"), std::chrono::milliseconds(300));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.taken, 30u);
  EXPECT_EQ(r.counts.recipients_not_attempted, 30u);
  EXPECT_EQ(r.counts.recipients_deferred, 0u);
  EXPECT_EQ(r.counts.transactions_finished, 0u);
  EXPECT_EQ(r.counts.recipients_attempted(), 0u);
  EXPECT_GE((*server)->connections_accepted(), 1u);
  for (auto& [rcpt, outcome] : r.by_recipient)
    EXPECT_EQ(outcome.reply.enhanced.to_string(), "4.3.2") << rcpt << ": " << outcome.reply.to_string();
}

TEST(StopAccounting, RingFailureMidRunAccountsForEveryRecipient) {
  auto dns = silent_dns();
  ASSERT_TRUE(dns);
  ScriptedSmtpServerOptions so;
  so.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    // Slow final replies keep the one connection busy, so the rest wait in the pool.
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, std::chrono::milliseconds(30)};
    return std::nullopt;
  };
  auto server = ScriptedSmtpServer::start(so);
  ASSERT_TRUE(server) << server.error();
  engine::DomainRouteResolver resolver(
      std::nullopt, {{"relayed.test", engine::Destination{"127.0.0.1", (*server)->port()}}}, 25);
  auto o = options_with_dns(*dns);
  o.pool.max_connections = 1;
  // A few messages' worth of sends (at least one per message), far fewer than 40 need.
  o.fail_ring_after_submissions = 20;
  auto r = run(o, resolver, join(make_items(40, 200, "relayed.test"), make_items(10, 200, "slow.test")));
  ASSERT_TRUE(r.finished);
  ASSERT_TRUE(r.failure);
  EXPECT_NE(r.failure->find("io_uring failure"), std::string::npos) << *r.failure;
  // The failure drains the engine: the feeder may stop before it has taken everything.
  EXPECT_LE(r.taken, 50u);
  EXPECT_EQ(r.counts.recipients_finished(), r.taken);
  EXPECT_EQ(r.by_recipient.size(), r.taken);
  // The failure came mid-run: some mail went, the rest (queued or waiting for DNS) did not.
  const size_t delivered_by_server = (*server)->messages().size();
  EXPECT_GE(delivered_by_server, 1u);
  EXPECT_LT(delivered_by_server, 40u);
  EXPECT_GE(r.counts.recipients_not_attempted, 10u);
  // Timed from the pool's queue to the outcome: the relayed ones, not those never routed.
  EXPECT_EQ(r.counts.transaction_duration.count, 40u);
  for (auto& [rcpt, outcome] : r.by_recipient) {
    if (!rcpt.ends_with("@slow.test")) continue;
    EXPECT_EQ(outcome.reply.enhanced.to_string(), "4.3.2") << outcome.reply.to_string();
    EXPECT_NE(outcome.reply.text.find("io_uring failure"), std::string::npos) << outcome.reply.text;
  }
}

TEST(StopAccounting, RingFailureAtOnceStillAnswersEveryJobOfTheInbox) {
  // The shard fails at its first submission; the feeder goes on pushing (and would block
  // for ever at a small inbox capacity if nothing answered): each job is not attempted.
  auto dns = silent_dns();
  ASSERT_TRUE(dns);
  engine::DomainRouteResolver resolver(
      std::nullopt, {{"relayed.test", engine::Destination{"127.0.0.1", 9}}}, 25);
  auto o = options_with_dns(*dns);
  o.fail_ring_after_submissions = 1;
  o.shard_inbox_capacity = 16;
  auto r = run(o, resolver, join(make_items(300, 200, "relayed.test"), make_items(50, 200, "slow.test")));
  ASSERT_TRUE(r.finished);
  ASSERT_TRUE(r.failure);
  EXPECT_LE(r.taken, 350u);
  EXPECT_GE(r.taken, 1u);
  EXPECT_EQ(r.counts.recipients_not_attempted, r.taken);
  EXPECT_EQ(r.counts.recipients_finished(), r.taken);
  EXPECT_EQ(r.by_recipient.size(), r.taken);
  // The first submission may carry connects when jobs were already in the inbox (a
  // loaded machine): those sessions are cut before their greeting, not attempted too.
  EXPECT_EQ(r.counts.transactions_finished, 0u);
}

}  // namespace
}  // namespace ringmail::test

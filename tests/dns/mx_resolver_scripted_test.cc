// MxResolver against a scripted UDP DNS server, for what dnsmasq cannot be made to do:
// SERVFAIL, REFUSED, silence, and a different TTL on every record.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns/mx_resolver.h"
#include "tests/dns/poll_loop.h"
#include "tests/dns/scripted_dns_server.h"

namespace ringmail::dns {
namespace {

using namespace std::chrono_literals;
using test::DnsRecord;
using test::DnsReply;
using test::kDnsTypeA;
using test::kDnsTypeAaaa;
using test::kDnsTypeMx;
using test::PollWatcher;
using test::resolve_and_wait;
using test::ScriptedDnsServer;
using Clock = std::chrono::steady_clock;

DnsReply records(std::vector<DnsRecord> list) { return {.records = std::move(list)}; }
DnsReply action(DnsReply::Action what) { return {.action = what}; }

class ScriptedResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto started = ScriptedDnsServer::start();
    ASSERT_TRUE(started) << started.error();
    server_ = std::move(*started);
    // A domain that works, for tests that need one next to a broken one.
    server_->set("good.test", kDnsTypeMx, records({{kDnsTypeMx, 300, "10 mx.good.test"}}));
    server_->set("mx.good.test", kDnsTypeA, records({{kDnsTypeA, 300, "127.0.0.2"}}));
    server_->set("mx.good.test", kDnsTypeAaaa, records({}));
  }

  std::unique_ptr<MxResolver> make(ResolverOptions options = {}) {
    if (options.servers.empty()) options.servers = {server_->address()};
    options.seed = 1;
    auto resolver = MxResolver::create(std::move(options), watcher_);
    EXPECT_TRUE(resolver) << resolver.error();
    return resolver ? std::move(*resolver) : nullptr;
  }

  std::function<Clock::time_point()> fake_clock() {
    return [this] { return fake_now_; };
  }

  std::unique_ptr<ScriptedDnsServer> server_;
  PollWatcher watcher_;
  Clock::time_point fake_now_ = Clock::now();
};

TEST_F(ScriptedResolverTest, ServfailIsTemporaryAndCachedBriefly) {
  server_->set("servfail.test", kDnsTypeMx, action(DnsReply::Action::kServfail));
  auto resolver = make({.failure_ttl = 5s, .clock = fake_clock()});
  const auto start = Clock::now();
  auto route = resolve_and_wait(*resolver, watcher_, "servfail.test");
  ASSERT_TRUE(route);
  EXPECT_LT(Clock::now() - start, 1s);  // an answer, not a timeout
  EXPECT_EQ(route->status, Route::Status::kTemporaryFailure);
  EXPECT_NE(route->detail.find("SERVFAIL"), std::string::npos) << route->detail;
  EXPECT_EQ(route->expires, fake_now_ + 5s);
  EXPECT_EQ(resolver->stats().failures, 1u);
  // c-ares tries the next server (here: the same one again) on SERVFAIL.
  EXPECT_EQ(server_->queries("servfail.test", kDnsTypeMx), 2u);

  bool called = false;
  resolver->resolve("servfail.test", [&](const Route& again) {
    called = true;
    EXPECT_EQ(again.status, Route::Status::kTemporaryFailure);
  });
  EXPECT_TRUE(called);
  fake_now_ += 5s;
  route = resolve_and_wait(*resolver, watcher_, "servfail.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(server_->queries("servfail.test", kDnsTypeMx), 4u);
}

TEST_F(ScriptedResolverTest, TemporaryFailuresAreNotCachedWithZeroFailureTtl) {
  server_->set("refused.test", kDnsTypeMx, action(DnsReply::Action::kRefused));
  auto resolver = make({.failure_ttl = 0s});
  auto route = resolve_and_wait(*resolver, watcher_, "refused.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kTemporaryFailure);
  EXPECT_NE(route->detail.find("REFUSED"), std::string::npos) << route->detail;
  route = resolve_and_wait(*resolver, watcher_, "refused.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(resolver->stats().cache_misses, 2u);
}

TEST_F(ScriptedResolverTest, SilentServerTimesOutWhileOtherNamesResolve) {
  server_->set("silent.test", kDnsTypeMx, action(DnsReply::Action::kSilent));
  // 200 ms, then 400 ms: c-ares doubles the timeout for each try.
  auto resolver = make({.query_timeout = 200ms, .tries = 2});
  const auto start = Clock::now();
  std::optional<Route> silent, good;
  resolver->resolve("silent.test", [&](const Route& route) { silent = route; });
  resolver->resolve("good.test", [&](const Route& route) { good = route; });
  ASSERT_TRUE(test::run_until(
      *resolver, watcher_, [&] { return good.has_value(); }, 2000ms));
  EXPECT_EQ(good->status, Route::Status::kOk) << good->detail;
  EXPECT_FALSE(silent);  // served while the silent one still waits for its first timeout
  EXPECT_EQ(resolver->pending(), 1u);
  auto wait = resolver->next_timeout();
  ASSERT_TRUE(wait);
  EXPECT_LE(*wait, 200ms);

  std::chrono::milliseconds longest{0};
  ASSERT_TRUE(test::run_until(
      *resolver, watcher_, [&] { return silent.has_value(); }, 3000ms, &longest));
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 550ms);
  EXPECT_LT(elapsed, 2000ms);
  EXPECT_LE(longest, 400ms);  // the loop never waited longer than c-ares's next timeout
  EXPECT_EQ(silent->status, Route::Status::kTemporaryFailure);
  EXPECT_NE(silent->detail.find("timeout"), std::string::npos) << silent->detail;
  EXPECT_EQ(server_->queries("silent.test", kDnsTypeMx), 2u);
  EXPECT_FALSE(resolver->next_timeout());
}

TEST_F(ScriptedResolverTest, NoServerListeningIsTemporary) {
  // A port nothing listens on: the kernel answers with ICMP port unreachable.
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  auto resolver = make(
      {.servers = {"127.0.0.1:" + std::to_string(ntohs(addr.sin_port))}, .query_timeout = 300ms});
  const auto start = Clock::now();
  auto route = resolve_and_wait(*resolver, watcher_, "good.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kTemporaryFailure) << route->detail;
  EXPECT_LT(Clock::now() - start, 1000ms);  // at most the timeouts
}

TEST_F(ScriptedResolverTest, CachedForTheSmallestTtlOfAllRecordsUsed) {
  server_->set("ttl.test", kDnsTypeMx, records({{kDnsTypeMx, 300, "10 mx.ttl.test"}}));
  server_->set("mx.ttl.test", kDnsTypeA, records({{kDnsTypeA, 30, "127.0.0.2"}}));
  server_->set("mx.ttl.test", kDnsTypeAaaa, records({{kDnsTypeAaaa, 100, "::2"}}));
  server_->set("long.test", kDnsTypeMx, records({{kDnsTypeMx, 86400, "10 mx.long.test"}}));
  server_->set("mx.long.test", kDnsTypeA, records({{kDnsTypeA, 86400, "127.0.0.3"}}));
  server_->set("mx.long.test", kDnsTypeAaaa, records({}));
  auto resolver = make({.max_ttl = 3600s, .clock = fake_clock()});
  auto route = resolve_and_wait(*resolver, watcher_, "ttl.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
  EXPECT_EQ(route->expires, fake_now_ + 30s);
  route = resolve_and_wait(*resolver, watcher_, "long.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
  EXPECT_EQ(route->expires, fake_now_ + 3600s);
}

TEST_F(ScriptedResolverTest, NullMx) {
  server_->set("null.test", kDnsTypeMx, records({{kDnsTypeMx, 300, "0 ."}}));
  server_->set("null10.test", kDnsTypeMx, records({{kDnsTypeMx, 300, "10 ."}}));
  // A null MX next to a real one is a misconfiguration; the real one still works.
  server_->set("mixed.test", kDnsTypeMx,
               records({{kDnsTypeMx, 300, "0 ."}, {kDnsTypeMx, 300, "10 mx.good.test"}}));
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "null.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kNullMx) << route->detail;
  route = resolve_and_wait(*resolver, watcher_, "null10.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kNullMx) << route->detail;
  EXPECT_EQ(resolver->stats().queries_sent, 2u);
  route = resolve_and_wait(*resolver, watcher_, "mixed.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
  ASSERT_EQ(route->exchangers.size(), 1u);
  EXPECT_EQ(route->exchangers[0].name, "mx.good.test");
}

TEST_F(ScriptedResolverTest, OneFamilyFailingStillGivesTheOther) {
  server_->set("half.test", kDnsTypeMx, records({{kDnsTypeMx, 300, "10 mx.half.test"}}));
  server_->set("mx.half.test", kDnsTypeA, action(DnsReply::Action::kServfail));
  server_->set("mx.half.test", kDnsTypeAaaa, records({{kDnsTypeAaaa, 300, "::5"}}));
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "half.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
  EXPECT_EQ(route->exchangers[0].addresses, (std::vector<std::string>{"::5"}));
}

TEST_F(ScriptedResolverTest, AddressLookupFailureOfTheOnlyExchangerIsTemporary) {
  server_->set("addrfail.test", kDnsTypeMx, records({{kDnsTypeMx, 300, "10 mx.addrfail.test"}}));
  server_->set("mx.addrfail.test", kDnsTypeA, action(DnsReply::Action::kServfail));
  server_->set("mx.addrfail.test", kDnsTypeAaaa, action(DnsReply::Action::kServfail));
  // Implicit MX whose address lookup fails: temporary, not "no such domain".
  server_->set("implicitfail.test", kDnsTypeMx, records({}));
  server_->set("implicitfail.test", kDnsTypeA, action(DnsReply::Action::kServfail));
  server_->set("implicitfail.test", kDnsTypeAaaa, records({}));
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "addrfail.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kTemporaryFailure) << route->detail;
  route = resolve_and_wait(*resolver, watcher_, "implicitfail.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kTemporaryFailure) << route->detail;
}

TEST_F(ScriptedResolverTest, CancelAllCallsEveryWaiter) {
  server_->set_fallback(action(DnsReply::Action::kSilent));
  auto resolver = make();
  int called = 0;
  for (const char* name : {"a.test", "b.test", "a.test", "c.test"}) {
    resolver->resolve(name, [&](const Route& route) {
      ++called;
      EXPECT_EQ(route.status, Route::Status::kTemporaryFailure);
      EXPECT_NE(route.detail.find("draining"), std::string::npos) << route.detail;
    });
  }
  EXPECT_EQ(resolver->pending(), 4u);
  resolver->cancel_all("draining");
  EXPECT_EQ(called, 4);
  EXPECT_EQ(resolver->pending(), 0u);
  EXPECT_FALSE(resolver->next_timeout());

  // The resolver still works afterwards.
  server_->set_fallback(action(DnsReply::Action::kNxdomain));
  auto route = resolve_and_wait(*resolver, watcher_, "good.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kOk) << route->detail;
}

TEST_F(ScriptedResolverTest, DestroyingWithQueriesInFlightDropsTheirCallbacks) {
  server_->set_fallback(action(DnsReply::Action::kSilent));
  auto resolver = make();
  bool called = false;
  resolver->resolve("x.test", [&](const Route&) { called = true; });
  EXPECT_FALSE(watcher_.interest().empty());
  resolver.reset();
  EXPECT_FALSE(called);
  EXPECT_TRUE(watcher_.interest().empty());
}

TEST_F(ScriptedResolverTest, QueriesBeyondTheInFlightLimitWaitTheirTurn) {
  for (const char* name : {"q1.test", "q2.test", "q3.test"}) {
    server_->set(name, kDnsTypeMx, records({{kDnsTypeMx, 300, "10 mx.good.test"}}));
  }
  auto resolver = make({.max_queries_in_flight = 1});
  int ok = 0;
  for (const char* name : {"q1.test", "q2.test", "q3.test"}) {
    resolver->resolve(name, [&](const Route& route) { ok += route.status == Route::Status::kOk; });
  }
  ASSERT_TRUE(test::run_until(
      *resolver, watcher_, [&] { return ok == 3; }, 5000ms));
  const auto stats = resolver->stats();
  EXPECT_EQ(stats.queries_sent, 5u);    // 3 MX, then A and AAAA of the shared exchanger once
  EXPECT_EQ(stats.queries_queued, 3u);  // q2, q3 and the AAAA behind the A
}

TEST_F(ScriptedResolverTest, CancelAllAlsoEndsQueuedQueries) {
  server_->set_fallback(action(DnsReply::Action::kSilent));
  auto resolver = make({.max_queries_in_flight = 1});
  int called = 0;
  for (const char* name : {"a.test", "b.test", "c.test"})
    resolver->resolve(name, [&](const Route&) { ++called; });
  EXPECT_EQ(resolver->stats().queries_queued, 2u);
  resolver->cancel_all("stop");
  EXPECT_EQ(called, 3);
  EXPECT_EQ(resolver->stats().queries_sent, 1u);
}

TEST(MxResolverCreate, RejectsBadOptions) {
  PollWatcher watcher;
  EXPECT_FALSE(MxResolver::create({.servers = {"not an address"}}, watcher));
  EXPECT_FALSE(MxResolver::create({.servers = {""}}, watcher));
  EXPECT_FALSE(MxResolver::create({.tries = 0}, watcher));
  EXPECT_FALSE(MxResolver::create({.max_exchangers = 0}, watcher));
  EXPECT_TRUE(MxResolver::create({.servers = {"127.0.0.1:5353", "[::1]:53"}}, watcher));
  EXPECT_TRUE(MxResolver::create({}, watcher));  // the system's resolv.conf
  EXPECT_TRUE(watcher.calls().empty());          // no socket before the first query
}

}  // namespace
}  // namespace ringmail::dns

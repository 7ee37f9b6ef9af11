// MxResolver against a real DNS server: dnsmasq on a loopback port, driven by a poll() loop.
// One dnsmasq serves the whole suite; each test uses its own names where it counts the
// queries dnsmasq logged.
#include <gtest/gtest.h>

#include <set>

#include "dns/mx_resolver.h"
#include "tests/dns/dnsmasq_process.h"
#include "tests/dns/poll_loop.h"

namespace ringmail::dns {
namespace {

using namespace std::chrono_literals;
using test::DnsmasqProcess;
using test::PollWatcher;
using test::resolve_and_wait;
using Clock = std::chrono::steady_clock;

constexpr int kTtl = 60;  // dnsmasq --local-ttl: every record's TTL

std::vector<std::string> names_of(const Route& route) {
  std::vector<std::string> names;
  for (const Exchanger& exchanger : route.exchangers) names.push_back(exchanger.name);
  return names;
}

std::vector<std::string> zone_records() {
  std::vector<std::string> records = {
      // Three preferences; a has both families, b IPv4 only, c IPv6 only.
      "--mx-host=mx.test,c.mx.test,30",
      "--mx-host=mx.test,a.mx.test,10",
      "--mx-host=mx.test,b.mx.test,20",
      "--host-record=a.mx.test,127.0.0.2,::2",
      "--host-record=b.mx.test,127.0.0.3",
      "--host-record=c.mx.test,::4",
      "--mx-host=equal.test,e1.equal.test,10",
      "--mx-host=equal.test,e2.equal.test,10",
      "--host-record=e1.equal.test,127.0.0.5",
      "--host-record=e2.equal.test,127.0.0.6",
      "--host-record=implicit.test,127.0.0.7,::7",
      "--mx-host=nullmx.test,.,0",
      "--txt-record=txtonly.test,nothing to mail here",
      "--mx-host=partial.test,dead.partial.test,10",
      "--mx-host=partial.test,live.partial.test,20",
      "--host-record=live.partial.test,127.0.0.8",
      "--mx-host=nohost.test,missing.nohost.test,10",
      "--mx-host=coalesce.test,a.mx.test,10",
      "--mx-host=shared1.test,a.mx.test,10",
      "--mx-host=shared2.test,a.mx.test,10",
      // Every name under bulk.test: no MX, A 127.0.0.9, no AAAA.
      "--address=/bulk.test/127.0.0.9",
      "--local=/bulk.test/",
  };
  // 60 MX records do not fit a 512-byte UDP answer: c-ares must retry over TCP.
  for (int i = 1; i <= 60; ++i) {
    char host[32];
    std::snprintf(host, sizeof host, "h%02d.many.test", i);
    records.push_back("--mx-host=many.test," + std::string(host) + "," + std::to_string(i));
    records.push_back("--host-record=" + std::string(host) + ",127.0.1." + std::to_string(i));
  }
  return records;
}

class DnsmasqResolverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto started = DnsmasqProcess::start({.records = zone_records(), .local_ttl = kTtl});
    if (!started) {
      start_error_ = new std::string(started.error());
      return;
    }
    dnsmasq_ = started->release();
  }
  static void TearDownTestSuite() {
    delete dnsmasq_;
    dnsmasq_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(dnsmasq_, nullptr) << (start_error_ ? *start_error_ : ""); }

  std::unique_ptr<MxResolver> make(ResolverOptions options = {}) {
    options.servers = {dnsmasq_->address()};
    if (options.seed == 0) options.seed = 1;
    auto resolver = MxResolver::create(std::move(options), watcher_);
    EXPECT_TRUE(resolver) << resolver.error();
    return resolver ? std::move(*resolver) : nullptr;
  }

  // A clock the test moves by hand, for the cache.
  std::function<Clock::time_point()> fake_clock() {
    return [this] { return fake_now_; };
  }

  static DnsmasqProcess* dnsmasq_;
  static std::string* start_error_;
  PollWatcher watcher_;  // outlives every resolver of the test (declared before them)
  Clock::time_point fake_now_ = Clock::now();
};

DnsmasqProcess* DnsmasqResolverTest::dnsmasq_ = nullptr;
std::string* DnsmasqResolverTest::start_error_ = nullptr;

TEST_F(DnsmasqResolverTest, ExchangersByPreferenceWithBothFamilies) {
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "mx.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
  EXPECT_EQ(route->domain, "mx.test");
  ASSERT_EQ(names_of(*route), (std::vector<std::string>{"a.mx.test", "b.mx.test", "c.mx.test"}));
  EXPECT_EQ(route->exchangers[0].preference, 10);
  EXPECT_EQ(route->exchangers[2].preference, 30);
  EXPECT_EQ(route->exchangers[0].addresses, (std::vector<std::string>{"127.0.0.2", "::2"}));
  EXPECT_EQ(route->exchangers[1].addresses, (std::vector<std::string>{"127.0.0.3"}));
  EXPECT_EQ(route->exchangers[2].addresses, (std::vector<std::string>{"::4"}));
  EXPECT_EQ(resolver->stats().queries_sent, 7u);  // MX, then A and AAAA of three hosts
  EXPECT_EQ(resolver->pending(), 0u);
  EXPECT_GE(dnsmasq_->queries_logged("MX", "mx.test"), 1u);
}

TEST_F(DnsmasqResolverTest, FamilyOptions) {
  {
    auto resolver = make({.prefer_ipv6 = true});
    auto route = resolve_and_wait(*resolver, watcher_, "mx.test");
    ASSERT_TRUE(route);
    ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
    EXPECT_EQ(route->exchangers[0].addresses, (std::vector<std::string>{"::2", "127.0.0.2"}));
  }
  {
    auto resolver = make({.families = ResolverOptions::Families::kIpv4Only});
    auto route = resolve_and_wait(*resolver, watcher_, "mx.test");
    ASSERT_TRUE(route);
    EXPECT_EQ(names_of(*route), (std::vector<std::string>{"a.mx.test", "b.mx.test"}));
    EXPECT_EQ(route->exchangers[0].addresses, (std::vector<std::string>{"127.0.0.2"}));
    EXPECT_NE(route->detail.find("c.mx.test: no address record"), std::string::npos)
        << route->detail;
    EXPECT_EQ(resolver->stats().queries_sent, 4u);
  }
  {
    auto resolver = make({.families = ResolverOptions::Families::kIpv6Only});
    auto route = resolve_and_wait(*resolver, watcher_, "mx.test");
    ASSERT_TRUE(route);
    EXPECT_EQ(names_of(*route), (std::vector<std::string>{"a.mx.test", "c.mx.test"}));
    EXPECT_EQ(route->exchangers[0].addresses, (std::vector<std::string>{"::2"}));
  }
}

TEST_F(DnsmasqResolverTest, EqualPreferencesAreShuffledForEachCaller) {
  // One resolver: the first answer is looked up, the rest come from the cache, and each
  // caller gets its own order.
  auto resolver = make({.seed = 7});
  std::set<std::string> first_seen;
  for (int i = 0; i < 30; ++i) {
    auto route = resolve_and_wait(*resolver, watcher_, "equal.test");
    ASSERT_TRUE(route);
    ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
    ASSERT_EQ(route->exchangers.size(), 2u);
    first_seen.insert(route->exchangers[0].name);
  }
  EXPECT_EQ(first_seen, (std::set<std::string>{"e1.equal.test", "e2.equal.test"}));
  EXPECT_EQ(resolver->stats().cache_hits, 29u);

  // Fresh resolvers: the seed decides, and different seeds give both orders.
  std::set<std::string> by_seed;
  for (unsigned seed = 1; seed <= 16; ++seed) {
    auto fresh = make({.seed = seed});
    auto route = resolve_and_wait(*fresh, watcher_, "equal.test");
    ASSERT_TRUE(route);
    ASSERT_EQ(route->exchangers.size(), 2u);
    by_seed.insert(route->exchangers[0].name);
    auto again = make({.seed = seed});
    auto same = resolve_and_wait(*again, watcher_, "equal.test");
    ASSERT_TRUE(same);
    EXPECT_EQ(names_of(*same), names_of(*route)) << "seed " << seed;
  }
  EXPECT_EQ(by_seed.size(), 2u);
}

TEST_F(DnsmasqResolverTest, NoMxRecordMeansImplicitMx) {
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "implicit.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
  ASSERT_EQ(route->exchangers.size(), 1u);
  EXPECT_EQ(route->exchangers[0].name, "implicit.test");
  EXPECT_EQ(route->exchangers[0].preference, 0);
  EXPECT_EQ(route->exchangers[0].addresses, (std::vector<std::string>{"127.0.0.7", "::7"}));
  EXPECT_NE(route->detail.find("implicit"), std::string::npos);
}

TEST_F(DnsmasqResolverTest, NullMxBouncesWithoutAddressQueries) {
  auto resolver = make({.negative_ttl = 120s, .clock = fake_clock()});
  auto route = resolve_and_wait(*resolver, watcher_, "nullmx.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kNullMx) << route->detail;
  EXPECT_TRUE(route->exchangers.empty());
  EXPECT_EQ(route->expires, fake_now_ + 120s);
  EXPECT_EQ(resolver->stats().queries_sent, 1u);
  EXPECT_EQ(dnsmasq_->queries_logged("MX", "nullmx.test"), 1u);
  EXPECT_EQ(dnsmasq_->queries_logged("A", "nullmx.test"), 0u);
  EXPECT_EQ(dnsmasq_->queries_logged("AAAA", "nullmx.test"), 0u);
}

TEST_F(DnsmasqResolverTest, NxdomainIsNoSuchDomainAndCachedForTheNegativeTtl) {
  auto resolver = make({.negative_ttl = 120s, .clock = fake_clock()});
  auto route = resolve_and_wait(*resolver, watcher_, "nx.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kNoSuchDomain) << route->detail;
  EXPECT_NE(route->detail.find("NXDOMAIN"), std::string::npos);
  EXPECT_EQ(resolver->stats().queries_sent, 1u);

  fake_now_ += 119s;
  bool called = false;
  resolver->resolve("nx.test", [&](const Route& again) {
    called = true;
    EXPECT_EQ(again.status, Route::Status::kNoSuchDomain);
  });
  EXPECT_TRUE(called);  // from the cache, before resolve() returned
  EXPECT_EQ(resolver->stats().queries_sent, 1u);

  fake_now_ += 2s;
  route = resolve_and_wait(*resolver, watcher_, "nx.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(resolver->stats().queries_sent, 2u);
}

TEST_F(DnsmasqResolverTest, NoMxAndNoAddressIsNoSuchDomain) {
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "txtonly.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kNoSuchDomain) << route->detail;
  EXPECT_EQ(resolver->stats().queries_sent, 3u);  // MX, A, AAAA
}

TEST_F(DnsmasqResolverTest, ExchangerWithoutAddressIsSkipped) {
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "partial.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
  EXPECT_EQ(names_of(*route), (std::vector<std::string>{"live.partial.test"}));
  EXPECT_NE(route->detail.find("dead.partial.test: NXDOMAIN"), std::string::npos) << route->detail;
}

TEST_F(DnsmasqResolverTest, NoExchangerWithAnAddressIsTemporary) {
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "nohost.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kTemporaryFailure) << route->detail;
  EXPECT_NE(route->detail.find("missing.nohost.test: NXDOMAIN"), std::string::npos)
      << route->detail;
  EXPECT_EQ(resolver->stats().failures, 1u);
}

TEST_F(DnsmasqResolverTest, ConcurrentRequestsShareOneLookup) {
  auto resolver = make();
  int called = 0;
  for (int i = 0; i < 100; ++i) {
    resolver->resolve(i % 2 ? "coalesce.test" : "Coalesce.TEST.", [&](const Route& route) {
      ++called;
      EXPECT_EQ(route.status, Route::Status::kOk) << route.detail;
      EXPECT_EQ(names_of(route), (std::vector<std::string>{"a.mx.test"}));
    });
  }
  EXPECT_EQ(called, 0);
  EXPECT_EQ(resolver->pending(), 100u);
  ASSERT_TRUE(test::run_until(
      *resolver, watcher_, [&] { return called == 100; }, 5000ms));
  const ResolverStats stats = resolver->stats();
  EXPECT_EQ(stats.cache_misses, 1u);
  EXPECT_EQ(stats.coalesced, 99u);
  EXPECT_EQ(stats.queries_sent, 3u);
  EXPECT_EQ(resolver->pending(), 0u);
  EXPECT_EQ(dnsmasq_->queries_logged("MX", "coalesce.test"), 1u);
}

TEST_F(DnsmasqResolverTest, CachedUntilTheSmallestTtl) {
  auto resolver = make({.clock = fake_clock()});
  const auto start = fake_now_;
  auto route = resolve_and_wait(*resolver, watcher_, "mx.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk);
  EXPECT_EQ(route->expires, start + std::chrono::seconds(kTtl));
  EXPECT_EQ(resolver->stats().queries_sent, 7u);

  fake_now_ = start + std::chrono::seconds(kTtl - 1);
  bool called = false;
  resolver->resolve("MX.test.", [&](const Route& hit) {
    called = true;
    EXPECT_EQ(names_of(hit), names_of(*route));
  });
  EXPECT_TRUE(called);
  EXPECT_EQ(resolver->stats().cache_hits, 1u);
  EXPECT_EQ(resolver->stats().queries_sent, 7u);

  fake_now_ = start + std::chrono::seconds(kTtl);
  route = resolve_and_wait(*resolver, watcher_, "mx.test");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, Route::Status::kOk);
  EXPECT_EQ(resolver->stats().cache_misses, 2u);
  EXPECT_EQ(resolver->stats().queries_sent, 14u);  // the addresses had expired too
}

TEST_F(DnsmasqResolverTest, ExchangerAddressesAreSharedBetweenDomains) {
  auto resolver = make();
  auto first = resolve_and_wait(*resolver, watcher_, "shared1.test");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, Route::Status::kOk) << first->detail;
  auto second = resolve_and_wait(*resolver, watcher_, "shared2.test");
  ASSERT_TRUE(second);
  ASSERT_EQ(second->status, Route::Status::kOk) << second->detail;
  EXPECT_EQ(second->exchangers[0].addresses, first->exchangers[0].addresses);
  EXPECT_EQ(resolver->stats().queries_sent, 4u);  // MX A AAAA, then MX only
  EXPECT_EQ(resolver->stats().host_cache_hits, 1u);
}

TEST_F(DnsmasqResolverTest, LargeAnswerIsRetriedOverTcp) {
  auto resolver = make();
  auto route = resolve_and_wait(*resolver, watcher_, "many.test");
  ASSERT_TRUE(route);
  ASSERT_EQ(route->status, Route::Status::kOk) << route->detail;
  EXPECT_EQ(names_of(*route),
            (std::vector<std::string>{"h01.many.test", "h02.many.test", "h03.many.test",
                                      "h04.many.test", "h05.many.test"}));
  EXPECT_EQ(route->exchangers[4].addresses, (std::vector<std::string>{"127.0.1.5"}));
  // Only a TCP socket with a query to send is watched for writability.
  EXPECT_TRUE(watcher_.ever_writable());
}

TEST_F(DnsmasqResolverTest, InvalidNamesAreRejectedAtOnce) {
  auto resolver = make();
  for (std::string name : {std::string(300, 'a') + ".test", std::string("a..test"),
                           std::string("spa ce.test"), std::string("")}) {
    bool called = false;
    resolver->resolve(name, [&](const Route& route) {
      called = true;
      EXPECT_EQ(route.status, Route::Status::kNoSuchDomain);
      EXPECT_NE(route.detail.find("invalid domain name"), std::string::npos) << route.detail;
    });
    EXPECT_TRUE(called) << name;
  }
  EXPECT_EQ(resolver->stats().queries_sent, 0u);
  EXPECT_EQ(resolver->stats().invalid_names, 4u);
  EXPECT_TRUE(watcher_.calls().empty());
}

TEST_F(DnsmasqResolverTest, CallbackMayResolveAgain) {
  auto resolver = make();
  std::optional<Route> inner;
  bool outer = false;
  resolver->resolve("implicit.test", [&](const Route& route) {
    outer = true;
    EXPECT_EQ(route.status, Route::Status::kOk);
    resolver->resolve("mx.test", [&](const Route& next) { inner = next; });
  });
  ASSERT_TRUE(test::run_until(
      *resolver, watcher_, [&] { return inner.has_value(); }, 5000ms));
  EXPECT_TRUE(outer);
  EXPECT_EQ(inner->status, Route::Status::kOk);
}

TEST_F(DnsmasqResolverTest, EverySocketIsUnwatchedWhenTheResolverGoes) {
  auto resolver = make();
  bool called = false;
  resolver->resolve("mx.test", [&](const Route&) { called = true; });
  EXPECT_FALSE(watcher_.interest().empty());  // the query went out from inside resolve()
  resolver.reset();
  EXPECT_FALSE(called);  // dropped, as documented
  EXPECT_TRUE(watcher_.interest().empty());
}

// Not a benchmark, but a number for the record: many domains at once through dnsmasq.
TEST_F(DnsmasqResolverTest, ManyDomainsAtOnce) {
  constexpr int kDomains = 2000;
  auto resolver = make();
  int ok = 0, done = 0;
  const auto start = Clock::now();
  for (int i = 0; i < kDomains; ++i) {
    resolver->resolve("d" + std::to_string(i) + ".bulk.test", [&](const Route& route) {
      ++done;
      ok += route.status == Route::Status::kOk;
    });
  }
  ASSERT_TRUE(test::run_until(
      *resolver, watcher_, [&] { return done == kDomains; }, 20000ms))
      << done << " done";
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(ok, kDomains);
  const auto stats = resolver->stats();
  EXPECT_EQ(stats.queries_sent, 3u * kDomains);  // MX (NODATA), A, AAAA (NODATA)
  EXPECT_GT(stats.queries_queued, 0u);
  // Nothing was lost to a full socket buffer and retried after a timeout.
  EXPECT_LT(seconds, 1.5);
  std::printf("%d domains, %llu queries in %.3f s: %.0f queries/s\n", kDomains,
              static_cast<unsigned long long>(stats.queries_sent), seconds,
              static_cast<double>(stats.queries_sent) / seconds);
  RecordProperty("queries_per_second", static_cast<int>(stats.queries_sent / seconds));
}

}  // namespace
}  // namespace ringmail::dns

// The relay refresher with a scripted lookup: a changed address is published (host only),
// a failure keeps the last good one and is said once, stop() never waits for a lookup in
// progress, and a numeric relay gets no refresher at all.
#include "app/relay_refresher.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>

#include "app/config.h"
#include "app/relay.h"
#include "app/routing.h"

namespace ringmail::app {
namespace {

using namespace std::chrono_literals;

// Answers scripted by the test, one per lookup (the last one repeats); optionally holds a
// lookup until released. Shared with the refresher's thread, which may outlive the test's
// objects after a detaching stop(), so only ever owned through shared_ptr.
struct ScriptedLookup {
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::expected<std::string, std::string>> answers;
  std::vector<std::string> asked;
  bool hold = false;     // lookups wait while true
  bool holding = false;  // a lookup is waiting
  bool sigterm_blocked = true;
  std::vector<std::string> said;
  // Every line said, counted apart so a test can count after letting go of this object.
  std::shared_ptr<std::atomic<int>> said_count = std::make_shared<std::atomic<int>>(0);

  RelayAddressRefresher::Options options(std::shared_ptr<ScriptedLookup> self,
                                         std::chrono::milliseconds interval) {
    RelayAddressRefresher::Options o;
    o.interval = interval;
    o.lookup = [self](const std::string& host)
        -> std::expected<std::vector<std::string>, std::string> {
      sigset_t mask;
      pthread_sigmask(SIG_BLOCK, nullptr, &mask);
      std::unique_lock lock(self->mutex);
      if (!sigismember(&mask, SIGTERM)) self->sigterm_blocked = false;
      self->asked.push_back(host);
      self->holding = true;
      self->changed.notify_all();
      self->changed.wait(lock, [&] { return !self->hold; });
      self->holding = false;
      auto answer = self->answers.front();
      if (self->answers.size() > 1) self->answers.pop_front();
      if (!answer) return std::unexpected(answer.error());
      return std::vector<std::string>{*answer};
    };
    o.message = [self](const std::string& line) {
      std::lock_guard lock(self->mutex);
      self->said.push_back(line);
      ++*self->said_count;
    };
    return o;
  }
  std::vector<std::string> lines() {
    std::lock_guard lock(mutex);
    return said;
  }
};

std::shared_ptr<engine::LiveDestination> relay_target() {
  return std::make_shared<engine::LiveDestination>(
      engine::Destination{"192.0.2.1", 587, "smtp.provider.example", "", 3});
}

using Lookup = std::expected<std::vector<std::string>, std::string>;
Lookup addresses(std::initializer_list<const char*> list) {
  return std::vector<std::string>(list.begin(), list.end());
}
Lookup failure(std::string why) { return std::unexpected(std::move(why)); }

TEST(app_relay_refresher, TrackerSaysFailuresOnceAndChangesAlways) {
  RelayAddressTracker t("smtp.provider.example", "192.0.2.1");
  auto same = t.on_lookup(addresses({"192.0.2.1"}));
  EXPECT_FALSE(same.publish);
  EXPECT_FALSE(same.message);

  auto failed = t.on_lookup(failure(std::string("Name or service not known")));
  EXPECT_FALSE(failed.publish);
  EXPECT_EQ(failed.message,
            "ringmail: relay smtp.provider.example: lookup failed (Name or "
            "service not known); still using 192.0.2.1");
  EXPECT_FALSE(t.on_lookup(failure(std::string("again"))).message);  // said once
  auto back = t.on_lookup(addresses({"192.0.2.1"}));
  EXPECT_FALSE(back.publish);
  EXPECT_EQ(back.message,
            "ringmail: relay smtp.provider.example: lookup works again; still using 192.0.2.1");
  EXPECT_TRUE(t.on_lookup(failure(std::string("x"))).message);  // a new outage: said

  auto moved = t.on_lookup(addresses({"192.0.2.2"}));
  EXPECT_EQ(moved.publish, "192.0.2.2");
  EXPECT_EQ(moved.message,
            "ringmail: relay smtp.provider.example: address changed from "
            "192.0.2.1 to 192.0.2.2; new transactions go to 192.0.2.2");
  EXPECT_EQ(t.address(), "192.0.2.2");
  EXPECT_FALSE(t.on_lookup(addresses({"192.0.2.2"})).message);
}

// Round-robin DNS (several A records, rotated by the resolver): the address in use stays
// while the name has it, whatever the order; a move keeps to its family when it can.
TEST(app_relay_refresher, TrackerKeepsAnAddressTheNameStillHas) {
  RelayAddressTracker t("relay.example", "192.0.2.1");
  for (int i = 0; i < 3; ++i) {
    auto rotated = t.on_lookup(addresses({"192.0.2.2", "192.0.2.1", "192.0.2.3"}));
    EXPECT_FALSE(rotated.publish);
    EXPECT_FALSE(rotated.message);
  }
  auto moved = t.on_lookup(addresses({"2001:db8::1", "192.0.2.7", "192.0.2.8"}));
  EXPECT_EQ(moved.publish, std::optional<std::string>("192.0.2.7"));  // IPv4 still
  auto only_v6 = t.on_lookup(addresses({"2001:db8::1"}));
  EXPECT_EQ(only_v6.publish, std::optional<std::string>("2001:db8::1"));  // nothing else
}

TEST(app_relay_refresher, PublishesANewAddressKeepingPortNameAndProfile) {
  auto fake = std::make_shared<ScriptedLookup>();
  fake->answers = {std::string("192.0.2.1"), std::string("192.0.2.2")};
  auto target = relay_target();
  RelayAddressRefresher refresher("smtp.provider.example", "192.0.2.1", {target},
                                  fake->options(fake, 1h));
  refresher.refresh_now();
  ASSERT_TRUE(refresher.wait_for_lookups(1, 30s));
  EXPECT_EQ(target->get().host, "192.0.2.1");  // the same address: nothing changes
  refresher.refresh_now();
  ASSERT_TRUE(refresher.wait_for_lookups(2, 30s));
  const engine::Destination now = target->get();
  EXPECT_EQ(now.host, "192.0.2.2");  // so another pool key: the old pool idles out
  EXPECT_EQ(now.port, 587);
  EXPECT_EQ(now.tls_name, "smtp.provider.example");  // certificates name the relay
  EXPECT_EQ(now.security_profile, 3);
  refresher.stop();
  EXPECT_EQ(fake->asked,
            (std::vector<std::string>{"smtp.provider.example", "smtp.provider.example"}));
  ASSERT_EQ(fake->lines().size(), 1u);
  EXPECT_NE(fake->lines()[0].find("address changed from 192.0.2.1 to 192.0.2.2"),
            std::string::npos);
  EXPECT_TRUE(fake->sigterm_blocked);  // SIGTERM is for the main thread's StopSignals
}

TEST(app_relay_refresher, AFailureKeepsTheLastGoodAddress) {
  auto fake = std::make_shared<ScriptedLookup>();
  fake->answers = {std::unexpected(std::string("Temporary failure in name resolution"))};
  auto target = relay_target();
  RelayAddressRefresher refresher("smtp.provider.example", "192.0.2.1", {target},
                                  fake->options(fake, 1h));
  for (uint64_t i = 1; i <= 3; ++i) {
    refresher.refresh_now();
    ASSERT_TRUE(refresher.wait_for_lookups(i, 30s));
  }
  EXPECT_EQ(target->get().host, "192.0.2.1");
  refresher.stop();
  EXPECT_EQ(fake->lines(), (std::vector<std::string>{
                               "ringmail: relay smtp.provider.example: lookup failed (Temporary "
                               "failure in name resolution); still using 192.0.2.1"}));
}

TEST(app_relay_refresher, LooksUpAgainEveryIntervalByItself) {
  auto fake = std::make_shared<ScriptedLookup>();
  fake->answers = {std::string("192.0.2.1")};
  RelayAddressRefresher refresher("r.example", "192.0.2.1", {relay_target()},
                                  fake->options(fake, 5ms));
  EXPECT_TRUE(refresher.wait_for_lookups(3, 30s));  // no refresh_now()
}

// stop() on an idle refresher with an hour to wait: it wakes and joins the thread. Bounded
// by a generous wait so a hang fails the test rather than CI.
TEST(app_relay_refresher, StopsAnIdleRefresherAtOnce) {
  auto fake = std::make_shared<ScriptedLookup>();
  fake->answers = {std::string("192.0.2.1")};
  auto refresher = std::make_unique<RelayAddressRefresher>(
      "r.example", "192.0.2.1", std::vector{relay_target()}, fake->options(fake, 1h));
  auto stopped = std::async(std::launch::async, [&] { refresher->stop(); });
  ASSERT_EQ(stopped.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(refresher->lookups(), 0u);
  EXPECT_TRUE(fake->asked.empty());
}

// A lookup hanging (getaddrinfo waiting for DNS): stop() returns without it, and the
// thread, detached, finishes later without publishing, saying anything or leaking.
TEST(app_relay_refresher, StopDoesNotWaitForALookupInProgress) {
  auto fake = std::make_shared<ScriptedLookup>();
  fake->answers = {std::string("192.0.2.9")};
  fake->hold = true;
  auto target = relay_target();
  std::weak_ptr<ScriptedLookup> watch = fake;
  auto refresher = std::make_unique<RelayAddressRefresher>(
      "r.example", "192.0.2.1", std::vector{target}, fake->options(fake, 1h));
  refresher->refresh_now();
  {
    std::unique_lock lock(fake->mutex);
    ASSERT_TRUE(fake->changed.wait_for(lock, 30s, [&] { return fake->holding; }));
  }
  auto stopped = std::async(std::launch::async, [&] { refresher.reset(); });
  ASSERT_EQ(stopped.wait_for(30s), std::future_status::ready) << "stop() waited for the lookup";
  {
    std::lock_guard lock(fake->mutex);
    fake->hold = false;
  }
  fake->changed.notify_all();
  auto said_count = fake->said_count;
  fake.reset();  // now only the detached thread owns it; it goes when the thread ends
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!watch.expired() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(watch.expired()) << "the detached thread did not end";
  EXPECT_EQ(target->get().host, "192.0.2.1");  // nothing published after stop()
  EXPECT_EQ(said_count->load(), 0);
}

// What the feeder sees: route() of a resolver holding a live relay follows set().
TEST(app_relay_refresher, TheResolverRoutesToTheLatestAddress) {
  auto live = relay_target();
  engine::DomainRouteResolver resolver({std::shared_ptr<const engine::LiveDestination>(live),
                                        {{"fixed.test", engine::Destination{"192.0.2.7", 25}}}},
                                       25);
  EXPECT_EQ(resolver.route("x.test").host, "192.0.2.1");
  engine::Destination moved = live->get();
  moved.host = "192.0.2.2";
  live->set(moved);
  EXPECT_EQ(resolver.route("X.Test").host, "192.0.2.2");
  EXPECT_EQ(resolver.route("x.test").tls_name, "smtp.provider.example");
  EXPECT_EQ(resolver.route("fixed.test").host, "192.0.2.7");
}

TEST(app_relay_refresher, RecognisesNumericHosts) {
  EXPECT_TRUE(is_numeric_host("127.0.0.1"));
  EXPECT_TRUE(is_numeric_host("::1"));
  EXPECT_TRUE(is_numeric_host("2001:db8::1"));
  EXPECT_FALSE(is_numeric_host("localhost"));
  EXPECT_FALSE(is_numeric_host("smtp.provider.example"));
}

TEST(app_relay_refresher, EnvironmentHookOverridesTheInterval) {
  unsetenv("RINGMAIL_RELAY_REFRESH_MS");
  EXPECT_EQ(relay_refresh_interval(), 60s);
  setenv("RINGMAIL_RELAY_REFRESH_MS", "250", 1);
  EXPECT_EQ(relay_refresh_interval(), 250ms);
  setenv("RINGMAIL_RELAY_REFRESH_MS", "0", 1);
  EXPECT_EQ(relay_refresh_interval(), 60s);
  setenv("RINGMAIL_RELAY_REFRESH_MS", "soon", 1);
  EXPECT_EQ(relay_refresh_interval(), 60s);
  unsetenv("RINGMAIL_RELAY_REFRESH_MS");
}

// Numeric relays and routes are fixed destinations: the plain resolver, no thread. A name
// is live, starting at its start-up address with tls_name the name as configured.
TEST(app_relay_refresher, OnlyNamedRelaysAreRefreshed) {
  Config numeric;
  numeric.relay = "127.0.0.1:2525";
  numeric.routes["a.test"].relay = "[::1]:2526";
  auto fixed = make_route_resolver(numeric);
  ASSERT_TRUE(fixed) << fixed.error();
  EXPECT_NE(dynamic_cast<engine::DomainRouteResolver*>(fixed->get()), nullptr);
  EXPECT_EQ((*fixed)->route("x.test").host, "127.0.0.1");
  EXPECT_EQ((*fixed)->route("x.test").tls_name, "");
  EXPECT_EQ((*fixed)->route("a.test").host, "::1");

  Config named;
  named.relay = "localhost:2525";
  named.routes["a.test"].relay = "localhost:2526";
  named.routes["b.test"].relay = "127.0.0.1:2527";
  auto live = make_route_resolver(named);
  ASSERT_TRUE(live) << live.error();
  EXPECT_EQ(dynamic_cast<engine::DomainRouteResolver*>(live->get()), nullptr);
  const engine::Destination relay = (*live)->route("x.test");
  EXPECT_EQ(relay.host, "127.0.0.1");
  EXPECT_EQ(relay.port, 2525);
  EXPECT_EQ(relay.tls_name, "localhost");
  EXPECT_EQ((*live)->route("a.test").port, 2526);
  EXPECT_EQ((*live)->route("a.test").tls_name, "localhost");
  EXPECT_EQ((*live)->route("b.test").tls_name, "");

  Config server_name;  // [tls] server_name still names the relay for TLS
  server_name.relay = "localhost:2525";
  server_name.tls_server_name = "mx.provider.example";
  auto overridden = make_route_resolver(server_name);
  ASSERT_TRUE(overridden) << overridden.error();
  EXPECT_EQ((*overridden)->route("x.test").tls_name, "mx.provider.example");
}

}  // namespace
}  // namespace ringmail::app

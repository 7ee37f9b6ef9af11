// Delivery by MX against a real DNS server on loopback (dnsmasq) and real sinks on
// several loopback addresses standing for different exchangers.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/domain_route_resolver.h"
#include "tests/dns/dnsmasq_process.h"
#include "tests/engine/engine_harness.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

using smtp::RecipientStatus;

class MxRouting : public ::testing::Test {
 protected:
  // Starts dnsmasq with `records`; sinks are started by the test on 127.0.0.x:port_.
  void start_dns(std::vector<std::string> records) {
    DnsmasqOptions o;
    o.records = std::move(records);
    auto dns = DnsmasqProcess::start(o);
    ASSERT_TRUE(dns) << dns.error();
    dns_ = std::move(*dns);
  }
  std::unique_ptr<SmtpSinkProcess> sink(const std::string& host) {
    SmtpSinkOptions o;
    o.host = host;
    o.port = port_;
    auto s = SmtpSinkProcess::start(o);
    if (!s) ADD_FAILURE() << s.error();
    if (s && port_ == 0) port_ = (*s)->port();
    return s ? std::move(*s) : nullptr;
  }
  engine::EngineOptions options() {
    auto o = test_options();
    o.mx.resolver.servers = {dns_->address()};
    o.mx.resolver.families = dns::ResolverOptions::Families::kIpv4Only;
    o.mx.resolver.query_timeout = std::chrono::milliseconds(300);
    return o;
  }
  EngineRun run(engine::EngineOptions o, std::vector<engine::DeliveryItem> items,
                std::unordered_map<std::string, engine::Destination> routes = {}) {
    engine::DomainRouteResolver resolver(std::nullopt, std::move(routes), port_);
    return run_engine_with(std::move(o), resolver, std::move(items));
  }
  std::vector<engine::DeliveryItem> items(size_t n, const std::string& domain) {
    return make_items(n, 200, domain);
  }

  std::unique_ptr<DnsmasqProcess> dns_;
  uint16_t port_ = 0;
};

TEST_F(MxRouting, PreferredExchangerGetsTheMail) {
  start_dns({"--mx-host=pref.test,mx1.pref.test,10", "--mx-host=pref.test,mx2.pref.test,20",
             "--host-record=mx1.pref.test,127.0.0.2", "--host-record=mx2.pref.test,127.0.0.3"});
  auto first = sink("127.0.0.2");
  auto second = sink("127.0.0.3");
  ASSERT_TRUE(first && second);
  auto r = run(options(), items(50, "pref.test"));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 50u);
  EXPECT_EQ(first->messages_received(), 50u);
  EXPECT_EQ(second->messages_received(), 0u);
}

TEST_F(MxRouting, PreferredExchangerDownTheNextOneGetsTheMail) {
  start_dns({"--mx-host=down.test,mx1.down.test,10", "--mx-host=down.test,mx2.down.test,20",
             "--host-record=mx1.down.test,127.0.0.2", "--host-record=mx2.down.test,127.0.0.3"});
  auto second = sink("127.0.0.3");  // nothing listens on 127.0.0.2
  ASSERT_TRUE(second);
  auto r = run(options(), items(50, "down.test"));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 50u);
  EXPECT_EQ(second->messages_received(), 50u);
  EXPECT_GE(r.counts.connection_failures, 1u);
}

TEST_F(MxRouting, EqualPreferencesShareTheLoad) {
  start_dns({"--mx-host=equal.test,a.equal.test,10", "--mx-host=equal.test,b.equal.test,10",
             "--host-record=a.equal.test,127.0.0.2", "--host-record=b.equal.test,127.0.0.3"});
  auto a = sink("127.0.0.2");
  auto b = sink("127.0.0.3");
  ASSERT_TRUE(a && b);
  auto o = options();
  o.pool.max_connections = 4;
  o.pool.max_messages_per_connection = 10;  // many connections, each choosing a host
  auto r = run(o, items(200, "equal.test"));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 200u);
  EXPECT_GT(a->messages_received(), 40u);
  EXPECT_GT(b->messages_received(), 40u);
}

TEST_F(MxRouting, TheRelaysCredentialsAreNeverOfferedToAnExchanger) {
  // [auth] belongs to the relay. Were it applied to MX pools, a password would be offered
  // to another domain's server, and one offering no AUTH (smtp-sink) would defer all.
  start_dns({"--mx-host=auth.test,mx.auth.test,10", "--host-record=mx.auth.test,127.0.0.2"});
  auto s = sink("127.0.0.2");
  ASSERT_TRUE(s);
  auto o = options();
  o.security.auth = smtp::AuthCredentials{"relay-user", "relay-secret", true};
  o.security.tls.mode = engine::TlsPolicy::kDisabled;
  auto r = run(o, items(5, "auth.test"));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 5u);
  EXPECT_EQ(s->messages_received(), 5u);
}

TEST_F(MxRouting, ImplicitMxUsesTheDomainsOwnAddress) {
  start_dns({"--host-record=implicit.test,127.0.0.2"});
  auto s = sink("127.0.0.2");
  ASSERT_TRUE(s);
  auto r = run(options(), items(5, "implicit.test"));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 5u);
  EXPECT_EQ(s->messages_received(), 5u);
}

TEST_F(MxRouting, NullMxBouncesAtOnceWithoutConnecting) {
  start_dns({"--mx-host=nullmx.test,.,0"});
  auto r = run(options(), items(5, "nullmx.test"));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_bounced, 5u);
  EXPECT_EQ(r.counts.connections_opened, 0u);
  auto& reply = r.by_recipient.begin()->second.reply;
  EXPECT_EQ(reply.enhanced.to_string(), "5.1.10") << reply.to_string();
}

TEST_F(MxRouting, NoSuchDomainBounces) {
  start_dns({});
  auto r = run(options(), items(3, "missing.test"));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_bounced, 3u);
  EXPECT_EQ(r.by_recipient.begin()->second.reply.enhanced.to_string(), "5.1.2");
}

TEST_F(MxRouting, ManyRecipientsOfOneDomainCauseOneQuery) {
  start_dns({"--mx-host=one.test,mx.one.test,10", "--host-record=mx.one.test,127.0.0.2"});
  auto s = sink("127.0.0.2");
  ASSERT_TRUE(s);
  auto r = run(options(), items(300, "one.test"));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 300u);
  EXPECT_EQ(dns_->queries_logged("MX", "one.test"), 1u);
  EXPECT_EQ(r.counts.dns_lookups, 1u);  // the metrics say the same
  EXPECT_EQ(r.counts.dns_cache_hits, 299u);
}

TEST_F(MxRouting, DomainsWithTheSameExchangersShareOnePool) {
  start_dns({"--mx-host=a.test,mx.provider.test,10", "--mx-host=b.test,mx.provider.test,10",
             "--host-record=mx.provider.test,127.0.0.2"});
  auto s = sink("127.0.0.2");
  ASSERT_TRUE(s);
  auto o = options();
  o.pool.max_connections = 2;
  auto work = items(200, "a.test");
  auto more = items(200, "b.test");
  for (auto& i : more) work.push_back(std::move(i));
  auto r = run(o, std::move(work));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 400u);
  EXPECT_EQ(s->messages_received(), 400u);
  EXPECT_LE(r.counts.connections_opened, 2u);  // one site limit, not one per domain
}

TEST_F(MxRouting, SilentDnsServerDefersWhileOtherWorkGoesOn) {
  // A UDP socket that never answers stands for a dead DNS server; relayed.test has a
  // route of its own and must be delivered while the lookup of silent.test times out.
  int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(udp, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(udp, reinterpret_cast<sockaddr*>(&addr), &len);
  auto relay = sink("127.0.0.2");
  ASSERT_TRUE(relay);
  auto o = test_options();
  o.mx.resolver.servers = {"127.0.0.1:" + std::to_string(ntohs(addr.sin_port))};
  o.mx.resolver.query_timeout = std::chrono::milliseconds(200);
  o.mx.resolver.tries = 1;
  auto work = items(20, "silent.test");
  for (auto& i : items(20, "relayed.test")) work.push_back(std::move(i));
  auto started = std::chrono::steady_clock::now();
  auto r = run(o, std::move(work), {{"relayed.test", engine::Destination{"127.0.0.2", port_}}});
  ::close(udp);
  ASSERT_TRUE(r.finished);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
  EXPECT_EQ(r.counts.recipients_delivered, 20u);
  EXPECT_EQ(r.counts.recipients_deferred, 20u);
  for (auto& [rcpt, outcome] : r.by_recipient)
    if (rcpt.ends_with("@silent.test")) {
      EXPECT_EQ(outcome.reply.enhanced.to_string(), "4.4.3") << outcome.reply.to_string();
      break;
    }
}

}  // namespace
}  // namespace ringmail::test

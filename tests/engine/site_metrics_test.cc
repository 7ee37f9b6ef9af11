// Per-site counters of a real run by MX (dnsmasq on loopback, smtp-sink standing for every
// exchanger): names bounded per shard with the rest under "other", configured sites always
// named, failures and local outcomes counted by site; then the metric families built from
// that snapshot keep the configured and top-N sites and fold the rest into site="other".
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <sstream>

#include "engine/domain_route_resolver.h"
#include "metrics/delivery_collector.h"
#include "tests/dns/dnsmasq_process.h"
#include "tests/engine/engine_harness.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

const engine::SiteSample* find(const engine::DeliverySnapshot& d, const std::string& name) {
  for (const engine::SiteSample& s : d.sites)
    if (s.name == name) return &s;
  return nullptr;
}

std::string exposition(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

class SiteMetrics : public ::testing::Test {
 protected:
  void start(std::vector<std::string> records) {
    DnsmasqOptions o;
    o.records = std::move(records);
    auto dns = DnsmasqProcess::start(o);
    ASSERT_TRUE(dns) << dns.error();
    dns_ = std::move(*dns);
    SmtpSinkOptions s;
    s.host = "127.0.0.2";
    auto sink = SmtpSinkProcess::start(s);
    ASSERT_TRUE(sink) << sink.error();
    sink_ = std::move(*sink);
  }
  engine::EngineOptions options() {
    auto o = test_options();
    o.mx.resolver.servers = {dns_->address()};
    o.mx.resolver.families = dns::ResolverOptions::Families::kIpv4Only;
    o.mx.resolver.query_timeout = std::chrono::milliseconds(300);
    return o;
  }
  EngineRun run(engine::EngineOptions o, std::vector<engine::DeliveryItem> items) {
    engine::DomainRouteResolver resolver(std::nullopt, {}, sink_->port());
    return run_engine_with(std::move(o), resolver, std::move(items));
  }

  std::unique_ptr<DnsmasqProcess> dns_;
  std::unique_ptr<SmtpSinkProcess> sink_;
};

TEST_F(SiteMetrics, NamesAreBoundedPerShardAndTopSitesAreExported) {
  // Six domains, each with exchangers of its own name (so a pool of its own), all on the
  // one sink; d1 gets the most recipients, d6 the fewest.
  std::vector<std::string> records;
  std::vector<engine::DeliveryItem> items;
  for (int i = 1; i <= 6; ++i) {
    const std::string domain = "d" + std::to_string(i) + ".test";
    records.push_back("--mx-host=" + domain + ",mx." + domain + ",10");
    records.push_back("--host-record=mx." + domain + ",127.0.0.2");
    auto some = make_items(size_t(70 - 10 * i), 200, domain);
    items.insert(items.end(), some.begin(), some.end());
  }
  start(records);
  ASSERT_TRUE(dns_ && sink_);
  auto o = options();
  o.site_metrics.sites = {"D6.test"};  // configured: named even beyond the bound
  o.site_metrics.max_tracked_per_shard = 4;
  auto r = run(o, std::move(items));
  ASSERT_TRUE(r.finished);
  const engine::DeliverySnapshot& d = r.counts;
  ASSERT_EQ(d.recipients_delivered, 210u);

  // Four first-come names plus the configured one; the sixth domain is under "other".
  ASSERT_EQ(d.sites.size(), 5u);
  ASSERT_NE(find(d, "d6.test"), nullptr);
  EXPECT_EQ(find(d, "d6.test")->counts.recipients[0], 10u);
  uint64_t named = 0;
  for (const auto& s : d.sites) named += s.counts.recipients[0];
  EXPECT_GT(d.site_other.recipients[0], 0u);
  EXPECT_EQ(named + d.site_other.recipients[0], 210u);
  EXPECT_EQ(d.site_other.recipients[0] % 10, 0u);  // exactly one whole domain

  // Each domain went to DNS once; each lookup was timed.
  EXPECT_EQ(d.dns_lookups, 6u);
  EXPECT_EQ(d.dns_lookup_duration.count, 6u);

  // Exported: the configured site, the top two of the others, and "other" with the rest.
  metrics::SiteSeries series({.sites = {"d6.test"}, .top = 2});
  std::vector<engine::SiteSample> others;
  for (const auto& s : d.sites)
    if (s.name != "d6.test") others.push_back(s);
  std::sort(others.begin(), others.end(), [](const auto& a, const auto& b) {
    return a.counts.recipients_total() > b.counts.recipients_total();
  });
  const std::string text = exposition(series.families(d));
  auto line = [](const std::string& site, uint64_t n) {
    return "ringmail_site_recipients_total{site=\"" + site + "\",outcome=\"delivered\"} " +
           std::to_string(n) + "\n";
  };
  EXPECT_NE(text.find(line("d6.test", 10)), std::string::npos) << text;
  EXPECT_NE(text.find(line(others[0].name, others[0].counts.recipients[0])), std::string::npos)
      << text;
  EXPECT_NE(text.find(line(others[1].name, others[1].counts.recipients[0])), std::string::npos)
      << text;
  const uint64_t rest = 210 - 10 - others[0].counts.recipients[0] - others[1].counts.recipients[0];
  EXPECT_NE(text.find(line("other", rest)), std::string::npos) << text;
  EXPECT_EQ(text.find(others[2].name), std::string::npos) << text;
  size_t series_count = 0;
  for (size_t at = 0; (at = text.find("ringmail_site_recipients_total{", at)) != std::string::npos;
       ++at)
    ++series_count;
  EXPECT_EQ(series_count, 4u * 3u);  // 4 sites x 3 outcomes
}

TEST_F(SiteMetrics, FailuresAndLocalOutcomesBySite) {
  start({"--mx-host=ok.test,mx.ok.test,10", "--host-record=mx.ok.test,127.0.0.2",
         // Nothing listens on 127.0.0.9: every connection is refused.
         "--mx-host=dead.test,mx.dead.test,10", "--host-record=mx.dead.test,127.0.0.9"});
  ASSERT_TRUE(dns_ && sink_);
  std::vector<engine::DeliveryItem> items = make_items(5, 200, "ok.test");
  for (const char* domain : {"dead.test", "nx1.test", "nx2.test"}) {
    auto some = make_items(3, 200, domain);
    items.insert(items.end(), some.begin(), some.end());
  }
  auto o = options();
  o.site_metrics.sites = {"nx1.test"};
  auto r = run(o, std::move(items));
  ASSERT_TRUE(r.finished);
  const engine::DeliverySnapshot& d = r.counts;
  EXPECT_EQ(d.recipients_delivered, 5u);
  EXPECT_EQ(d.recipients_deferred, 3u);
  EXPECT_EQ(d.recipients_bounced, 6u);  // NXDOMAIN

  ASSERT_NE(find(d, "ok.test"), nullptr);
  EXPECT_EQ(find(d, "ok.test")->counts.recipients[0], 5u);
  EXPECT_EQ(find(d, "ok.test")->counts.connection_failures, 0u);
  ASSERT_NE(find(d, "dead.test"), nullptr);
  EXPECT_EQ(find(d, "dead.test")->counts.recipients[1], 3u);
  EXPECT_GE(find(d, "dead.test")->counts.connection_failures, 1u);
  EXPECT_EQ(find(d, "dead.test")->counts.connection_failures, d.connection_failures);
  EXPECT_EQ(d.connection_failures_by_reason[size_t(engine::ConnectionFailure::kRefused)],
            d.connection_failures);
  // A domain without a pool is named only when configured; nx2 does not use up a name.
  ASSERT_NE(find(d, "nx1.test"), nullptr);
  EXPECT_EQ(find(d, "nx1.test")->counts.recipients[2], 3u);
  EXPECT_EQ(find(d, "nx2.test"), nullptr);
  EXPECT_EQ(d.site_other.recipients[2], 3u);
  EXPECT_EQ(d.sites.size(), 3u);
}

}  // namespace
}  // namespace ringmail::test

// The engine families added for issue #7: failed connections by reason, the DNS lookup
// histogram, and per-site series whose label values stay bounded and whose counters never
// go backwards while sites move from "other" to a name of their own.
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <map>
#include <sstream>

#include "metrics/delivery_collector.h"

namespace ringmail::metrics {
namespace {

std::string exposition(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

// site -> delivered, from ringmail_site_recipients_total.
std::map<std::string, double> delivered_by_site(
    const std::vector<prometheus::MetricFamily>& families) {
  std::map<std::string, double> out;
  for (const auto& f : families) {
    if (f.name != "ringmail_site_recipients_total") continue;
    for (const auto& m : f.metric) {
      std::string site, outcome;
      for (const auto& l : m.label) (l.name == "site" ? site : outcome) = l.value;
      if (outcome == "delivered") out[site] = m.counter.value;
    }
  }
  return out;
}

// A snapshot with these delivered counts by site (sorted by name, as snapshots are).
engine::DeliverySnapshot with_sites(std::map<std::string, uint64_t> delivered, uint64_t other = 0) {
  engine::DeliverySnapshot d;
  for (auto& [name, n] : delivered) {
    engine::SiteSample s{name, {}};
    s.counts.recipients[0] = n;
    d.sites.push_back(s);
  }
  d.site_other.recipients[0] = other;
  return d;
}

TEST(metrics_engine_families, FailuresByReasonAndDnsLookupDuration) {
  EngineSample s;
  s.delivery.connection_failures_by_reason[size_t(engine::ConnectionFailure::kRefused)] = 4;
  s.delivery.connection_failures_by_reason[size_t(engine::ConnectionFailure::kTls)] = 1;
  s.delivery.connection_failures = 5;
  s.delivery.dns_lookup_duration.buckets[2] = 3;  // (2.5 ms, 5 ms]
  s.delivery.dns_lookup_duration.count = 3;
  s.delivery.dns_lookup_duration.sum_seconds = 0.012;
  const std::string text = exposition(engine_families(s));
  for (const char* line : {
           "ringmail_connection_failures_total 5",
           "# TYPE ringmail_connection_failures_by_reason_total counter",
           "ringmail_connection_failures_by_reason_total{reason=\"refused\"} 4",
           "ringmail_connection_failures_by_reason_total{reason=\"tls\"} 1",
           "ringmail_connection_failures_by_reason_total{reason=\"timeout\"} 0",
           "ringmail_connection_failures_by_reason_total{reason=\"other\"} 0",
           "# TYPE ringmail_dns_lookup_duration_seconds histogram",
           "ringmail_dns_lookup_duration_seconds_bucket{le=\"0.0025\"} 0",
           "ringmail_dns_lookup_duration_seconds_bucket{le=\"0.005\"} 3",
           "ringmail_dns_lookup_duration_seconds_bucket{le=\"+Inf\"} 3",
           "ringmail_dns_lookup_duration_seconds_count 3",
           "ringmail_dns_lookup_duration_seconds_sum 0.012",
       })
    EXPECT_TRUE(has_line(text, line)) << "missing: " << line << "\n" << text;
  size_t reasons = 0;
  for (const auto& f : engine_families(s))
    if (f.name == "ringmail_connection_failures_by_reason_total") reasons = f.metric.size();
  EXPECT_EQ(reasons, engine::kConnectionFailureReasons);
}

TEST(metrics_site_series, ConfiguredAndTopSitesTheRestAsOther) {
  SiteSeries series({.sites = {"Gmail.com", "quiet.test"}, .top = 2});
  auto d = with_sites({{"a.test", 50}, {"b.test", 40}, {"c.test", 30}, {"gmail.com", 5}}, 7);
  auto families = series.families(d);
  auto by = delivered_by_site(families);
  EXPECT_EQ(
      by, (std::map<std::string, double>{
              {"gmail.com", 5}, {"quiet.test", 0}, {"a.test", 50}, {"b.test", 40}, {"other", 37}}));
  const std::string text = exposition(families);
  EXPECT_TRUE(
      has_line(text, "ringmail_site_recipients_total{site=\"other\",outcome=\"bounced\"} 0"))
      << text;
  EXPECT_TRUE(has_line(text, "ringmail_site_connection_failures_total{site=\"quiet.test\"} 0"))
      << text;
}

TEST(metrics_site_series, EmptyEngineExportsOtherOnly) {
  SiteSeries series({});
  auto by = delivered_by_site(series.families(engine::DeliverySnapshot{}));
  EXPECT_EQ(by, (std::map<std::string, double>{{"other", 0}}));
}

TEST(metrics_site_series, SeriesAreStableAndNeverGoBackwards) {
  SiteSeries series({.top = 1, .max_named = 2});
  // First scrape: a.test is the top site and is exported whole.
  auto first = delivered_by_site(series.families(with_sites({{"a.test", 10}, {"b.test", 3}})));
  EXPECT_EQ(first, (std::map<std::string, double>{{"a.test", 10}, {"other", 3}}));
  // b.test overtakes: promoted; the 3 "other" exposed of it stay there, the 17 since are
  // its own. a.test keeps its series although it is no longer in the top one.
  auto second = delivered_by_site(series.families(with_sites({{"a.test", 11}, {"b.test", 20}})));
  EXPECT_EQ(second, (std::map<std::string, double>{{"a.test", 11}, {"b.test", 17}, {"other", 3}}));
  auto third = delivered_by_site(
      series.families(with_sites({{"a.test", 11}, {"b.test", 25}, {"c.test", 90}}, 1)));
  // The cap (2 names) is reached: c.test stays in "other" however busy it is.
  EXPECT_EQ(third, (std::map<std::string, double>{{"a.test", 11}, {"b.test", 22}, {"other", 94}}));
  for (auto* scrape : {&second, &third})
    for (auto& [site, value] : *scrape)
      if (first.contains(site)) {
        EXPECT_GE(value, first[site]) << site;
      }
  EXPECT_GE(third["other"], second["other"]);
  EXPECT_GE(third["b.test"], second["b.test"]);
}

TEST(metrics_site_series, TrafficBeforeAPromotionIsNotLostToOther) {
  // The first scrape comes before any traffic (the review's case): the one site's whole
  // count must end up under its name, not in "other".
  SiteSeries series({.top = 10});
  EXPECT_EQ(delivered_by_site(series.families(with_sites({}))),
            (std::map<std::string, double>{{"other", 0}}));
  auto later = delivered_by_site(series.families(with_sites({{"relay.test", 149000}})));
  EXPECT_EQ(later, (std::map<std::string, double>{{"relay.test", 149000}, {"other", 0}}));
}

TEST(metrics_site_series, ASiteNamedOtherCannotCollide) {
  SiteSeries series({.sites = {"other"}, .top = 3});
  auto by = delivered_by_site(series.families(with_sites({{"other", 4}, {"x.test", 1}})));
  EXPECT_EQ(by, (std::map<std::string, double>{{"x.test", 1}, {"other", 4}}));
}

TEST(metrics_site_series, LabelValuesStayBoundedWithManySites) {
  SiteSeries series({.top = 10});
  std::map<std::string, uint64_t> many;
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 1000; ++i)
      many["s" + std::to_string(i) + ".test"] += uint64_t(1 + (i * 7919 + round * 104729) % 997);
    auto by = delivered_by_site(series.families(with_sites(many)));
    EXPECT_LE(by.size(), 20u + 1u);  // 2 * top names + other
    double total = 0;
    for (auto& [site, n] : by) total += n;
    double expected = 0;
    for (auto& [site, n] : many) expected += double(n);
    // What a site had when promoted stays in "other": nothing is lost or counted twice.
    EXPECT_EQ(total, expected);
  }
}

TEST(metrics_site_series, CollectorExportsSiteFamilies) {
  RingmailCollector collector(
      [] {
        EngineSample s;
        s.delivery = with_sites({{"a.test", 2}});
        return s;
      },
      {}, SiteLabelOptions{.sites = {"b.test"}});
  const std::string text = exposition(collector.Collect());
  EXPECT_TRUE(
      has_line(text, "ringmail_site_recipients_total{site=\"a.test\",outcome=\"delivered\"} 2"))
      << text;
  EXPECT_TRUE(
      has_line(text, "ringmail_site_recipients_total{site=\"b.test\",outcome=\"delivered\"} 0"))
      << text;
  EXPECT_TRUE(has_line(text, "ringmail_site_connection_failures_total{site=\"other\"} 0")) << text;
}

}  // namespace
}  // namespace ringmail::metrics

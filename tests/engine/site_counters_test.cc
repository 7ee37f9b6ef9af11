// Per-site counters on one shard (bounded names, stable slots, snapshots summed by name),
// and how a failed connection's reason is classified.
#include "engine/site_counters.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "engine/delivery_counters.h"

namespace ringmail::engine {
namespace {

using smtp::RecipientStatus;

const SiteSample* find(const std::vector<SiteSample>& sites, const std::string& name) {
  for (const SiteSample& s : sites)
    if (s.name == name) return &s;
  return nullptr;
}

TEST(site_counters, NamesAreBoundedConfiguredOnesAlwaysTracked) {
  SiteCounters sites;
  const std::vector<std::string> configured = {"Gmail.com", "yahoo.com"};
  sites.configure(configured, /*capacity=*/2);
  SiteSlot& a = sites.slot_for("a.test");
  SiteSlot& b = sites.slot_for("B.test");
  SiteSlot& c = sites.slot_for("c.test");  // over capacity: counted as other
  EXPECT_NE(&a, &b);
  EXPECT_EQ(&c, &sites.other());
  EXPECT_EQ(&sites.slot_for("A.TEST"), &a);  // case does not matter, the slot is stable
  EXPECT_NE(&sites.slot_for("gmail.com"), &sites.other());  // configured: beyond capacity
  EXPECT_TRUE(sites.is_configured("GMAIL.com"));
  EXPECT_FALSE(sites.is_configured("a.test"));
  EXPECT_FALSE(sites.is_configured(""));
  EXPECT_EQ(&sites.existing_slot_or_other("nxdomain.test"), &sites.other());
  EXPECT_EQ(&sites.existing_slot_or_other("yahoo.com"), &sites.slot_for("yahoo.com"));

  a.count_recipients(RecipientStatus::kDelivered, 5);
  a.count_recipients(RecipientStatus::kBounced, 1);
  c.count_recipients(RecipientStatus::kDeferred, 7);
  sites.slot_for("gmail.com").count_connection_failure();

  std::vector<SiteSample> named;
  SiteCounts other;
  sites.read(named, other);
  ASSERT_EQ(named.size(), 4u);  // two configured + two first come
  for (size_t i = 1; i < named.size(); ++i) EXPECT_LT(named[i - 1].name, named[i].name);
  EXPECT_EQ(find(named, "a.test")->counts.recipients[0], 5u);
  EXPECT_EQ(find(named, "a.test")->counts.recipients[2], 1u);
  EXPECT_EQ(find(named, "b.test")->counts.recipients_total(), 0u);
  EXPECT_EQ(find(named, "gmail.com")->counts.connection_failures, 1u);
  EXPECT_EQ(find(named, "c.test"), nullptr);
  EXPECT_EQ(other.recipients[1], 7u);
}

TEST(site_counters, HundredThousandDomainsKeepTheDefaultBound) {
  SiteCounters sites;  // not configured: the first slot_for() configures the default
  for (int i = 0; i < 100000; ++i)
    sites.slot_for("d" + std::to_string(i) + ".test")
        .count_recipients(RecipientStatus::kDelivered, 1);
  std::vector<SiteSample> named;
  SiteCounts other;
  sites.read(named, other);
  EXPECT_EQ(named.size(), SiteCounters::kDefaultCapacity);
  uint64_t total = other.recipients_total();
  for (const SiteSample& s : named) total += s.counts.recipients_total();
  EXPECT_EQ(total, 100000u);
}

TEST(site_counters, SnapshotsSumSitesByName) {
  DeliveryCounters a, b;
  a.sites().configure({});
  b.sites().configure({});
  a.sites().slot_for("x.test").count_recipients(RecipientStatus::kDelivered, 3);
  a.sites().slot_for("z.test").count_recipients(RecipientStatus::kDeferred, 1);
  b.sites().slot_for("x.test").count_recipients(RecipientStatus::kDelivered, 4);
  b.sites().slot_for("y.test").count_connection_failure();
  b.sites().other().count_recipients(RecipientStatus::kBounced, 2);
  a.count_connection_failure(ConnectionFailure::kRefused, &a.sites().slot_for("x.test"));
  b.count_connection_failure(ConnectionFailure::kTls);
  b.count_connection_failure(ConnectionFailure::kRefused);

  DeliverySnapshot sum;
  sum.add(a.snapshot());
  sum.add(b.snapshot());
  ASSERT_EQ(sum.sites.size(), 3u);
  EXPECT_EQ(sum.sites[0].name, "x.test");
  EXPECT_EQ(sum.sites[0].counts.recipients[0], 7u);
  EXPECT_EQ(sum.sites[0].counts.connection_failures, 1u);
  EXPECT_EQ(sum.sites[1].name, "y.test");
  EXPECT_EQ(sum.sites[1].counts.connection_failures, 1u);
  EXPECT_EQ(sum.sites[2].name, "z.test");
  EXPECT_EQ(sum.site_other.recipients[2], 2u);
  EXPECT_EQ(sum.connection_failures, 3u);  // the unlabelled total is the sum of the reasons
  EXPECT_EQ(sum.connection_failures_by_reason[size_t(ConnectionFailure::kRefused)], 2u);
  EXPECT_EQ(sum.connection_failures_by_reason[size_t(ConnectionFailure::kTls)], 1u);
}

TEST(site_counters, DnsLookupDurationsAreAHistogram) {
  using namespace std::chrono_literals;
  DeliveryCounters c;
  c.count_dns_lookup_duration(3ms);   // (2.5 ms, 5 ms]
  c.count_dns_lookup_duration(20s);   // (10 s, 30 s]
  c.count_dns_lookup_duration(-1ms);  // a clock step: 0, first bucket
  const DurationHistogram h = c.snapshot().dns_lookup_duration;
  EXPECT_EQ(h.count, 3u);
  EXPECT_EQ(h.buckets[0], 1u);
  EXPECT_EQ(h.buckets[2], 1u);
  EXPECT_EQ(h.buckets[13], 1u);
  EXPECT_NEAR(h.sum_seconds, 20.003, 1e-9);
}

TEST(site_counters, ReaderRacesWriterSafely) {
  // A reader thread snapshots while the writer adds names: run under TSan/ASan, a torn
  // name or a read past the published slots would show.
  DeliveryCounters c;
  c.sites().configure({}, 64);
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) {
      DeliverySnapshot s = c.snapshot();
      for (const SiteSample& site : s.sites) EXPECT_EQ(site.name.substr(0, 1), "s");
    }
  });
  for (int i = 0; i < 200; ++i)
    c.sites()
        .slot_for("s" + std::to_string(i) + ".test")
        .count_recipients(RecipientStatus::kDelivered, 1);
  done = true;
  reader.join();
  EXPECT_EQ(c.snapshot().sites.size(), 64u);
}

TEST(connection_failure, ReasonsFromErrno) {
  EXPECT_EQ(connection_failure_from_errno(ECONNREFUSED), ConnectionFailure::kRefused);
  EXPECT_EQ(connection_failure_from_errno(ETIMEDOUT), ConnectionFailure::kTimeout);
  EXPECT_EQ(connection_failure_from_errno(EHOSTUNREACH), ConnectionFailure::kUnreachable);
  EXPECT_EQ(connection_failure_from_errno(ENETUNREACH), ConnectionFailure::kUnreachable);
  EXPECT_EQ(connection_failure_from_errno(ECONNRESET), ConnectionFailure::kClosed);
  EXPECT_EQ(connection_failure_from_errno(EPIPE), ConnectionFailure::kClosed);
  EXPECT_EQ(connection_failure_from_errno(EMFILE), ConnectionFailure::kResources);
  EXPECT_EQ(connection_failure_from_errno(ENFILE), ConnectionFailure::kResources);
  EXPECT_EQ(connection_failure_from_errno(EINVAL), ConnectionFailure::kOther);
}

TEST(connection_failure, ReasonsFromTheDecidingReply) {
  auto local = [](uint8_t k, uint16_t s, uint16_t d) { return smtp::Reply{0, {k, s, d}, "local"}; };
  EXPECT_EQ(connection_failure_from_reply({554, {5, 3, 2}, "go away"}),
            ConnectionFailure::kGreeting);
  EXPECT_EQ(connection_failure_from_reply({421, {}, "busy"}), ConnectionFailure::kGreeting);
  EXPECT_EQ(connection_failure_from_reply(local(4, 5, 0)), ConnectionFailure::kProtocol);
  EXPECT_EQ(connection_failure_from_reply(local(4, 7, 0)), ConnectionFailure::kTls);
  EXPECT_EQ(connection_failure_from_reply(local(4, 4, 7)), ConnectionFailure::kTimeout);
  EXPECT_EQ(connection_failure_from_reply(local(4, 4, 2)), ConnectionFailure::kClosed);
  EXPECT_EQ(connection_failure_from_reply(local(4, 4, 1)), ConnectionFailure::kOther);
}

TEST(connection_failure, LabelsAreFixedAndDistinct) {
  std::vector<std::string> labels;
  for (size_t i = 0; i < kConnectionFailureReasons; ++i) {
    std::string label = to_string(ConnectionFailure(i));
    for (const std::string& seen : labels) EXPECT_NE(label, seen);
    labels.push_back(label);
  }
  EXPECT_EQ(labels.front(), "refused");
  EXPECT_EQ(labels.back(), "other");
}

}  // namespace
}  // namespace ringmail::engine

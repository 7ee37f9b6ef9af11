// The collectable's exposition for a known snapshot, the per-shard histogram it reads,
// and the exporter serving it over real HTTP on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <sstream>
#include <thread>

#include "engine/delivery_counters.h"
#include "metrics/delivery_collector.h"
#include "metrics/exporter.h"
#include "metrics/late_exporter.h"
#include "smtp/transaction.h"
#include "tests/metrics/peer_process.h"

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

EngineSample known_sample() {
  EngineSample s;
  engine::DeliverySnapshot& d = s.delivery;
  d.recipients_delivered = 90;
  d.recipients_deferred = 7;
  d.recipients_bounced = 3;
  d.recipients_not_attempted = 5;
  d.transactions_finished = 12;
  d.transactions_delivered = 10;
  d.connections_opened = 6;
  d.connections_closed = 4;
  d.connection_failures = 1;
  d.destination_pools = 3;
  d.recipients_by_reply_code[250] = 90;
  d.recipients_by_reply_code[451] = 4;
  d.recipients_by_reply_code[0] = 3;
  d.recipients_by_reply_code[550] = 2;
  d.recipients_by_reply_code[554] = 1;
  d.recipients_by_enhanced_class[2] = 90;
  d.recipients_by_enhanced_class[5] = 3;
  d.recipients_by_enhanced_class[4] = 6;
  d.recipients_by_enhanced_class[0] = 1;
  d.ring_submissions = 40;
  d.ring_completions = 55;
  d.transaction_duration.buckets[0] = 2;  // <= 1 ms
  d.transaction_duration.buckets[3] = 8;  // <= 10 ms
  d.transaction_duration.buckets.back() = 1;  // > 600 s
  d.transaction_duration.count = 11;
  d.transaction_duration.sum_seconds = 700.5;
  s.recipients_taken = 120;
  s.shards = 2;
  return s;
}

TEST(metrics_collector, ExpositionOfAKnownSnapshot) {
  const std::string text = exposition(engine_families(known_sample()));
  for (const char* line : {
           "# TYPE ringmail_recipients_total counter",
           "ringmail_recipients_total{outcome=\"delivered\"} 90",
           "ringmail_recipients_total{outcome=\"deferred\"} 7",
           "ringmail_recipients_total{outcome=\"bounced\"} 3",
           "ringmail_recipients_total{outcome=\"not_attempted\"} 5",
           "ringmail_recipients_taken_total 120",
           "ringmail_recipients_in_flight 15",  // 120 - (90 + 7 + 3 + 5)
           "ringmail_messages_total 12",
           "ringmail_messages_delivered_total 10",
           "ringmail_smtp_replies_total{class=\"2xx\"} 90",
           "ringmail_smtp_replies_total{class=\"4xx\"} 4",
           "ringmail_smtp_replies_total{class=\"5xx\"} 3",
           "ringmail_smtp_replies_total{class=\"local\"} 3",
           "ringmail_smtp_replies_total{class=\"other\"} 0",
           "ringmail_smtp_enhanced_status_total{class=\"4\"} 6",
           "ringmail_smtp_enhanced_status_total{class=\"none\"} 1",
           "ringmail_connections_opened_total 6",
           "ringmail_connection_failures_total 1",
           "# TYPE ringmail_connections_open gauge",
           "ringmail_connections_open 2",
           "# TYPE ringmail_destination_pools gauge",
           "ringmail_destination_pools 3",
           "# TYPE ringmail_transaction_duration_seconds histogram",
           "ringmail_transaction_duration_seconds_bucket{le=\"0.001\"} 2",
           "ringmail_transaction_duration_seconds_bucket{le=\"0.005\"} 2",
           "ringmail_transaction_duration_seconds_bucket{le=\"0.01\"} 10",
           "ringmail_transaction_duration_seconds_bucket{le=\"600\"} 10",
           "ringmail_transaction_duration_seconds_bucket{le=\"+Inf\"} 11",
           "ringmail_transaction_duration_seconds_count 11",
           "ringmail_transaction_duration_seconds_sum 700.5",
           "ringmail_ring_submissions_total 40",
           "ringmail_ring_completions_total 55",
           "ringmail_shards 2",
       }) {
    EXPECT_TRUE(has_line(text, line)) << "missing: " << line << "\n" << text;
  }
}

TEST(metrics_collector, EveryLabelSetIsBoundedAndFixed) {
  // An empty engine exposes the same series as a busy one: dashboards and alerts never
  // see a series appear out of nowhere.
  auto empty = engine_families(EngineSample{});
  auto busy = engine_families(known_sample());
  ASSERT_EQ(empty.size(), busy.size());
  for (size_t i = 0; i < empty.size(); ++i) {
    EXPECT_EQ(empty[i].name, busy[i].name);
    EXPECT_EQ(empty[i].metric.size(), busy[i].metric.size()) << empty[i].name;
    EXPECT_TRUE(empty[i].name.starts_with("ringmail_")) << empty[i].name;
    if (empty[i].type == prometheus::MetricType::Counter) {
      EXPECT_TRUE(empty[i].name.ends_with("_total")) << empty[i].name;
    }
  }
}

TEST(metrics_collector, CollectAddsBuildInfoAndProviders) {
  int scrapes = 0;
  RingmailCollector collector(
      [&] {
        ++scrapes;
        return known_sample();
      },
      {[](std::vector<prometheus::MetricFamily>& out) {
        out.push_back(counter_family("ringmail_dns_queries_total", "test provider", 3));
      }});
  const std::string text = exposition(collector.Collect());
  EXPECT_EQ(scrapes, 1);
  EXPECT_TRUE(has_line(text, std::string("ringmail_build_info{version=\"") + build_version() + "\"} 1"))
      << text;
  EXPECT_TRUE(has_line(text, "ringmail_recipients_total{outcome=\"delivered\"} 90"));
  EXPECT_TRUE(has_line(text, "ringmail_dns_queries_total 3"));
}

TEST(metrics_counters, PerShardCountersSumIntoOneSnapshot) {
  using namespace std::chrono_literals;
  engine::DeliveryCounters a, b;
  smtp::Reply ok{250, {2, 0, 0}, "ok"}, later{451, {4, 3, 0}, "later"}, plain{550, {}, "no"};
  a.count_recipient(ok, int(smtp::RecipientStatus::kDelivered));
  a.count_recipient(later, int(smtp::RecipientStatus::kDeferred));
  b.count_recipient(plain, int(smtp::RecipientStatus::kBounced));
  a.count_connection_opened();
  a.count_connection_opened();
  a.count_connection_closed();
  b.count_ring_submissions(3);
  b.count_ring_submissions(-11);  // an error return is not a submission
  b.count_ring_completions(4);
  a.count_transaction_duration(3ms);   // (2.5 ms, 5 ms]
  a.count_transaction_duration(900s);  // > 600 s
  b.count_transaction_duration(0s);    // 0 s: first bucket

  engine::DeliverySnapshot sum;
  sum.add(a.snapshot());
  sum.add(b.snapshot());
  EXPECT_EQ(sum.recipients_delivered, 1u);
  EXPECT_EQ(sum.recipients_deferred, 1u);
  EXPECT_EQ(sum.recipients_bounced, 1u);
  EXPECT_EQ(sum.recipients_by_reply_code[550], 1u);
  EXPECT_EQ(sum.recipients_by_enhanced_class[2], 1u);
  EXPECT_EQ(sum.recipients_by_enhanced_class[4], 1u);
  EXPECT_EQ(sum.recipients_by_enhanced_class[0], 1u);
  EXPECT_EQ(sum.connections_opened, 2u);
  EXPECT_EQ(sum.connections_closed, 1u);
  EXPECT_EQ(sum.ring_submissions, 3u);
  EXPECT_EQ(sum.ring_completions, 4u);
  const auto& h = sum.transaction_duration;
  EXPECT_EQ(h.count, 3u);
  EXPECT_EQ(h.buckets[0], 1u);
  EXPECT_EQ(h.buckets[2], 1u);  // 0.005
  EXPECT_EQ(h.buckets.back(), 1u);
  EXPECT_NEAR(h.sum_seconds, 900.003, 1e-6);
}

TEST(metrics_exporter, RefusesAddressesItCannotBind) {
  EXPECT_TRUE(validate_listen_address("127.0.0.1:9464"));
  EXPECT_TRUE(validate_listen_address("0.0.0.0:0"));
  for (const char* bad : {"localhost:9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
                          "127.0.0.1:12x", "[::1]9464", "[nope]:1", ""}) {
    auto r = validate_listen_address(bad);
    EXPECT_FALSE(r) << bad;
  }
  auto bad = Exporter::start("localhost:1");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("localhost"), std::string::npos) << bad.error();
  // The IPv4 refusal suggests only addresses that work.
  EXPECT_EQ(bad.error().find("::1"), std::string::npos) << bad.error();
}

// Debian 12's civetweb has no IPv6: refused up front with a reason and what to use, not
// civetweb's "null context when constructing CivetServer".
TEST(metrics_exporter, RefusesIpv6WithAReason) {
  for (const char* v6 : {"[::1]:9464", "[::]:0", "::1:9464"}) {
    auto r = Exporter::start(v6);
    ASSERT_FALSE(r) << v6;
    EXPECT_NE(r.error().find("IPv6 listen addresses are not supported by Debian's civetweb; use "
                             "127.0.0.1:PORT or 0.0.0.0:PORT"),
              std::string::npos)
        << r.error();
  }
}

TEST(metrics_exporter, PortZeroAnnouncesThePortChosen) {
  std::ostringstream announce;
  auto exporter = Exporter::start("127.0.0.1:0", announce);
  ASSERT_TRUE(exporter) << exporter.error();
  const std::string port = std::to_string((*exporter)->port());
  EXPECT_EQ(announce.str(), "ringmail: serving metrics at http://127.0.0.1:" + port +
                                "/metrics (port 0: a free port)\n");
  // A port the operator chose is known to them: nothing to announce.
  exporter->reset();
  std::ostringstream quiet;
  auto again = Exporter::start("127.0.0.1:" + port, quiet);
  if (again) {  // (the port may have been taken meanwhile)
    EXPECT_EQ(quiet.str(), "");
  }
}

TEST(metrics_exporter, ServesTheCollectorOverHttp) {
  auto exporter = Exporter::start("127.0.0.1:0");
  ASSERT_TRUE(exporter) << exporter.error();
  const uint16_t port = (*exporter)->port();
  ASSERT_NE(port, 0);
  // Before expose(): nothing at /metrics yet.
  auto early = test::http_get(port, "/metrics");
  ASSERT_TRUE(early);
  EXPECT_NE(early->status, 200);

  (*exporter)->expose(std::make_shared<RingmailCollector>([] { return known_sample(); }));
  auto r = test::http_get(port, "/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(has_line(r->body, "ringmail_recipients_total{outcome=\"bounced\"} 3")) << r->body;

  // The same port cannot be bound twice: the second start fails with a message.
  auto second = Exporter::start("127.0.0.1:" + std::to_string(port));
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().find(std::to_string(port)), std::string::npos) << second.error();
}

// A listening socket on 127.0.0.1 holding a port, as another run would hold 9464.
class HeldPort {
 public:
  HeldPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0 && ::listen(fd_, 1) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port_ = ntohs(a.sin_port);
  }
  ~HeldPort() { release(); }
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

TEST(metrics_late_exporter, BindsOnceTheAddressIsFreeAndServesWhatWasExposed) {
  HeldPort held;
  ASSERT_NE(held.port(), 0);
  const std::string address = "127.0.0.1:" + std::to_string(held.port());
  ASSERT_FALSE(Exporter::start(address));  // taken, as at a service's start
  std::mutex mutex;
  std::string said;
  LateExporter late(address, std::chrono::milliseconds(20), [&](const std::string& a) {
    std::lock_guard lock(mutex);
    said = a;
  });
  late.expose(std::make_shared<RingmailCollector>([] { return known_sample(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // several tries, all refused
  EXPECT_FALSE(late.bound());

  held.release();  // the other run ended
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!late.bound() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(late.bound());
  auto r = test::http_get(held.port(), "/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(has_line(r->body, "ringmail_recipients_total{outcome=\"bounced\"} 3")) << r->body;
  std::lock_guard lock(mutex);
  EXPECT_EQ(said, address);
}

TEST(metrics_late_exporter, StopsPromptlyWhileTheAddressIsTaken) {
  HeldPort held;
  ASSERT_NE(held.port(), 0);
  const auto began = std::chrono::steady_clock::now();
  {
    LateExporter late("127.0.0.1:" + std::to_string(held.port()), std::chrono::seconds(10), {});
    EXPECT_FALSE(late.bound());
  }
  // Destroyed mid-wait: it does not sit out the 10 s interval.
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds(5));
}

}  // namespace
}  // namespace ringmail::metrics

// The real `ringmail send` binary, scraped: during and at the end of a campaign against a
// real smtp-sink or a scripted server, /metrics passes `promtool check metrics` and its
// counters equal the JSON summary; a real Prometheus server scrapes it and answers a
// PromQL query with the delivered count. Every wait is bounded.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/metrics/peer_process.h"
#include "tests/support/scripted_smtp_server.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kPromtool = "/usr/bin/promtool";
constexpr const char* kPrometheus = "/usr/bin/prometheus";

// The value of the sample `series` (name with its labels, exactly as exposed), or -1.
double sample(const std::string& text, const std::string& series) {
  size_t at = ("\n" + text).find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::strtod(text.c_str() + at + series.size() + 1, nullptr);
}

class MetricsE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ringmail_metrics_e2e_XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    std::ofstream(dir_ / "m.eml") << "From: a@ringmail.test\nSubject: metrics\n\nhello\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path recipients(const std::vector<std::string>& addresses) {
    fs::path p = dir_ / "r.txt";
    std::ofstream f(p);
    for (const auto& a : addresses) f << a << "\n";
    return p;
  }
  static std::vector<std::string> users(size_t n, const std::string& prefix = "user") {
    std::vector<std::string> out;
    for (size_t i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i) + "@example.test");
    return out;
  }

  std::unique_ptr<PeerProcess> start_ringmail(const std::string& relay, const fs::path& rcpts,
                                              std::vector<std::string> extra) {
    std::vector<std::string> argv{RINGMAIL_BINARY, "send", "--relay", relay, "--from",
                                  "a@ringmail.test", "--message", (dir_ / "m.eml").string(),
                                  "--recipients", rcpts.string(), "--summary", "json", "--quiet",
                                  "--shards", "2", "--db", (dir_ / "metrics.db").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<PeerProcess>(argv, dir_ / "stdout", dir_ / "stderr");
  }

  // Waits for the JSON summary (printed when the run has ended; the exporter lingers).
  nlohmann::json wait_for_summary(PeerProcess& p, std::chrono::seconds limit = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string out = p.out();
      if (out.find('\n') != std::string::npos) return nlohmann::json::parse(out);
      if (p.wait(0ms)) break;
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << "no summary; stderr: " << p.err();
    return {};
  }

  // `promtool check metrics` on the text: "" when it passes, else what it said.
  std::string promtool_check(const std::string& text) {
    std::ofstream(dir_ / "scrape.txt") << text;
    const std::string cmd = std::string(kPromtool) + " check metrics < " +
                            (dir_ / "scrape.txt").string() + " > " +
                            (dir_ / "promtool.out").string() + " 2>&1";
    int rc = std::system(cmd.c_str());
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 0) return "";
    std::ifstream f(dir_ / "promtool.out");
    return "promtool failed: " + std::string(std::istreambuf_iterator<char>(f), {});
  }

  // Counters the summary also reports must agree with it exactly.
  void expect_counters_equal_summary(const std::string& text, const nlohmann::json& s) {
    EXPECT_EQ(sample(text, "ringmail_recipients_total{outcome=\"delivered\"}"), s["delivered"].get<double>());
    EXPECT_EQ(sample(text, "ringmail_recipients_total{outcome=\"deferred\"}"), s["deferred"].get<double>());
    EXPECT_EQ(sample(text, "ringmail_recipients_total{outcome=\"bounced\"}"), s["bounced"].get<double>());
    EXPECT_EQ(sample(text, "ringmail_recipients_total{outcome=\"not_attempted\"}"),
              s["not_attempted"].get<double>());
    EXPECT_EQ(sample(text, "ringmail_messages_total"), s["messages"].get<double>());
    EXPECT_EQ(sample(text, "ringmail_connections_opened_total"), s["connections_opened"].get<double>());
    EXPECT_EQ(sample(text, "ringmail_connection_failures_total"),
              s["connection_failures"].get<double>());
    double c2 = 0, c4 = 0, c5 = 0, local = 0;
    for (auto& [code, n] : s["reply_codes"].items()) {
      int c = std::stoi(code);
      (c == 0 ? local : c < 300 ? c2 : c < 500 ? c4 : c5) += n.get<double>();
    }
    EXPECT_EQ(sample(text, "ringmail_smtp_replies_total{class=\"2xx\"}"), c2);
    EXPECT_EQ(sample(text, "ringmail_smtp_replies_total{class=\"4xx\"}"), c4);
    EXPECT_EQ(sample(text, "ringmail_smtp_replies_total{class=\"5xx\"}"), c5);
    EXPECT_EQ(sample(text, "ringmail_smtp_replies_total{class=\"local\"}"), local);
    EXPECT_EQ(sample(text, "ringmail_recipients_in_flight"), 0);
    EXPECT_EQ(sample(text, "ringmail_connections_open"), 0);
    EXPECT_EQ(sample(text, "ringmail_transaction_duration_seconds_count"), s["messages"].get<double>());
  }

  fs::path dir_;
};

TEST_F(MetricsE2e, CountersAtTheEndOfACampaignEqualTheSummary) {
  if (access(kPromtool, X_OK) != 0) GTEST_SKIP() << kPromtool << " missing (Debian package prometheus)";
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  const uint16_t port = unused_loopback_port();
  auto ringmail = start_ringmail((*sink)->address(), recipients(users(2000)),
                                 {"--rcpt-per-txn", "7", "--metrics-listen",
                                  "127.0.0.1:" + std::to_string(port), "--metrics-linger", "30",
                                  "--log-file", (dir_ / "outcomes.log").string()});
  auto summary = wait_for_summary(*ringmail);
  ASSERT_FALSE(summary.is_null());
  EXPECT_EQ(summary["delivered"], 2000);
  auto scrape = http_get(port, "/metrics");
  ASSERT_TRUE(scrape) << ringmail->err();
  ASSERT_EQ(scrape->status, 200);
  EXPECT_EQ(promtool_check(scrape->body), "") << scrape->body;
  expect_counters_equal_summary(scrape->body, summary);
  EXPECT_EQ(sample(scrape->body, "ringmail_recipients_taken_total"), 2000);
  EXPECT_EQ(sample(scrape->body, "ringmail_log_lines_written_total"), 2000);
  EXPECT_EQ(sample(scrape->body, "ringmail_log_lines_dropped_total"), 0);
  EXPECT_GT(sample(scrape->body, "ringmail_ring_completions_total"), 0);
  // The linger ends at SIGTERM, promptly, and the exit status is the run's.
  const auto stop_at = std::chrono::steady_clock::now();
  EXPECT_EQ(ringmail->stop(10s), 0) << ringmail->err();
  EXPECT_LT(std::chrono::steady_clock::now() - stop_at, 5s);
  std::ifstream log(dir_ / "outcomes.log");
  size_t lines = 0;
  for (std::string l; std::getline(log, l);) {
    ++lines;
    EXPECT_NE(l.find(" status=delivered "), std::string::npos) << l;
  }
  EXPECT_EQ(lines, 2000u);
}

TEST_F(MetricsE2e, ScrapedWhileRunningAndWithEveryOutcome) {
  if (access(kPromtool, X_OK) != 0) GTEST_SKIP() << kPromtool << " missing (Debian package prometheus)";
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == "RCPT" && c.argument.find("bounce") != std::string::npos)
      return ScriptedReply::line("550 5.1.1 no such user");
    if (c.verb == "RCPT" && c.argument.find("defer") != std::string::npos)
      return ScriptedReply::line("451 4.3.0 try later");
    // Slow enough that the run lasts about a second and is scraped mid-way.
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, 4ms};
    return std::nullopt;
  };
  auto server = ScriptedSmtpServer::start(o);
  ASSERT_TRUE(server) << server.error();
  auto addresses = users(300);
  for (auto& a : users(20, "bounce")) addresses.push_back(a);
  for (auto& a : users(30, "defer")) addresses.push_back(a);
  const uint16_t port = unused_loopback_port();
  auto ringmail = start_ringmail((*server)->address(), recipients(addresses),
                                 {"--rcpt-per-txn", "1", "--connections", "2", "--metrics-listen",
                                  "127.0.0.1:" + std::to_string(port), "--metrics-linger", "30"});
  // Mid-run: a valid exposition with work in flight.
  bool saw_progress = false;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!saw_progress && std::chrono::steady_clock::now() < deadline && !ringmail->wait(0ms)) {
    auto r = http_get(port, "/metrics", 2s);
    if (r && r->status == 200) {
      double delivered = sample(r->body, "ringmail_recipients_total{outcome=\"delivered\"}");
      if (delivered > 0 && delivered < 300) {
        saw_progress = true;
        EXPECT_EQ(promtool_check(r->body), "") << r->body;
        EXPECT_GT(sample(r->body, "ringmail_connections_open"), 0);
        EXPECT_GT(sample(r->body, "ringmail_recipients_in_flight"), 0);
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(saw_progress) << "never scraped mid-run; stderr: " << ringmail->err();
  auto summary = wait_for_summary(*ringmail);
  ASSERT_FALSE(summary.is_null());
  EXPECT_EQ(summary["delivered"], 300);
  EXPECT_EQ(summary["bounced"], 20);
  EXPECT_EQ(summary["deferred"], 30);
  auto scrape = http_get(port, "/metrics");
  ASSERT_TRUE(scrape);
  EXPECT_EQ(promtool_check(scrape->body), "") << scrape->body;
  expect_counters_equal_summary(scrape->body, summary);
  EXPECT_EQ(sample(scrape->body, "ringmail_smtp_enhanced_status_total{class=\"5\"}"), 20);
  EXPECT_EQ(sample(scrape->body, "ringmail_smtp_enhanced_status_total{class=\"4\"}"), 30);
  EXPECT_EQ(ringmail->stop(10s), 1);  // not everyone was delivered
}

TEST_F(MetricsE2e, AGivenAddressThatIsTakenStopsTheRunAndNoMetricsServesNothing) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  // Hold a port with a listening socket of our own.
  auto blocker = ScriptedSmtpServer::start({});
  ASSERT_TRUE(blocker);
  auto taken = start_ringmail((*sink)->address(), recipients(users(10)),
                              {"--metrics-listen", (*blocker)->address()});
  EXPECT_EQ(taken->wait(30s), 2);
  EXPECT_NE(taken->err().find("cannot serve metrics on " + (*blocker)->address()), std::string::npos)
      << taken->err();
  EXPECT_EQ((*sink)->messages_received(), 0u);

  const uint16_t port = unused_loopback_port();
  auto off = start_ringmail((*sink)->address(), recipients(users(10)),
                            {"--no-metrics", "--metrics-listen", "127.0.0.1:" + std::to_string(port),
                             "--metrics-linger", "30"});
  EXPECT_EQ(off->wait(30s), 0) << off->err();  // no linger without an exporter
  EXPECT_FALSE(http_get(port, "/metrics", 500ms));
}

// A real Prometheus server, started on loopback with a temporary config and data
// directory, scrapes ringmail; PromQL through its HTTP API returns the delivered count.
// Prometheus takes a second or two to start; the whole test is bounded at 30 s.
TEST_F(MetricsE2e, PrometheusServerScrapesTheDeliveredCount) {
  if (access(kPrometheus, X_OK) != 0) GTEST_SKIP() << kPrometheus << " missing (Debian package prometheus)";
  const auto test_deadline = std::chrono::steady_clock::now() + 30s;
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  const uint16_t metrics_port = unused_loopback_port();
  auto ringmail = start_ringmail((*sink)->address(), recipients(users(1234)),
                                 {"--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port),
                                  "--metrics-linger", "60"});
  auto summary = wait_for_summary(*ringmail);
  ASSERT_EQ(summary["delivered"], 1234);

  fs::create_directories(dir_ / "tsdb");
  std::ofstream(dir_ / "prometheus.yml")
      << "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n"
         "scrape_configs:\n  - job_name: ringmail\n    static_configs:\n"
         "      - targets: ['127.0.0.1:" << metrics_port << "']\n";
  const uint16_t prom_port = unused_loopback_port();
  PeerProcess prometheus({kPrometheus, "--config.file=" + (dir_ / "prometheus.yml").string(),
                          "--storage.tsdb.path=" + (dir_ / "tsdb").string(),
                          "--web.listen-address=127.0.0.1:" + std::to_string(prom_port),
                          "--log.level=warn"},
                         dir_ / "prometheus.out", dir_ / "prometheus.err");
  const std::string query =
      "/api/v1/query?query=" +
      url_encode("sum(ringmail_recipients_total{job=\"ringmail\",outcome=\"delivered\"})");
  double delivered = -1;
  std::string last;
  while (std::chrono::steady_clock::now() < test_deadline) {
    auto r = http_get(prom_port, query, 1s);
    if (r && r->status == 200) {
      last = r->body;
      auto j = nlohmann::json::parse(r->body, nullptr, false);
      if (!j.is_discarded() && j["status"] == "success" && !j["data"]["result"].empty()) {
        delivered = std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
        break;
      }
    }
    ASSERT_FALSE(prometheus.wait(0ms)) << "prometheus exited: " << prometheus.err();
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(delivered, 1234) << "last answer: " << last << "\nprometheus: " << prometheus.err();
  // And Prometheus saw the target up.
  auto up = http_get(prom_port, "/api/v1/query?query=" + url_encode("up{job=\"ringmail\"}"), 2s);
  ASSERT_TRUE(up);
  EXPECT_NE(up->body.find("\"1\"]"), std::string::npos) << up->body;
  prometheus.stop(5s);
  EXPECT_EQ(ringmail->stop(10s), 0);
}

TEST_F(MetricsE2e, TheRunServiceServesMetricsAcrossPasses) {
  // `ringmail run` without --until-done is the long-running service the deployment files
  // start: it is scraped while it waits for work, with the totals of every pass so far.
  if (access(kPromtool, X_OK) != 0) GTEST_SKIP() << kPromtool << " missing (Debian package prometheus)";
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  const std::string db = (dir_ / "queue.db").string();
  PeerProcess enqueue({RINGMAIL_BINARY, "enqueue", "--db", db, "--from", "a@ringmail.test",
                       "--message", (dir_ / "m.eml").string(), "--recipients",
                       recipients(users(500)).string(), "--quiet"},
                      dir_ / "enqueue.out", dir_ / "enqueue.err");
  ASSERT_EQ(enqueue.wait(30s), 0) << enqueue.err();
  const uint16_t port = unused_loopback_port();
  PeerProcess run({RINGMAIL_BINARY, "run", "--db", db, "--relay", (*sink)->address(), "--quiet",
                   "--metrics-listen", "127.0.0.1:" + std::to_string(port)},
                  dir_ / "run.out", dir_ / "run.err");
  double delivered = -1;
  std::string body;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline && delivered < 500) {
    if (auto r = http_get(port, "/metrics", 2s); r && r->status == 200) {
      body = r->body;
      delivered = sample(body, "ringmail_recipients_total{outcome=\"delivered\"}");
    }
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(delivered, 500) << run.err();
  EXPECT_EQ(promtool_check(body), "") << body;
  EXPECT_EQ(run.stop(), 0);  // SIGTERM stops a service cleanly
  EXPECT_EQ((*sink)->recipients_received(), 500u);
}

// `run --until-done` keeps the final counts scrapeable for --metrics-linger, as `send`
// does, so a batch job's last numbers reach Prometheus; SIGTERM ends the wait.
TEST_F(MetricsE2e, RunUntilDoneLingersWithItsFinalCounts) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  const std::string db = (dir_ / "queue.db").string();
  PeerProcess enqueue({RINGMAIL_BINARY, "enqueue", "--db", db, "--from", "a@ringmail.test",
                       "--message", (dir_ / "m.eml").string(), "--recipients",
                       recipients(users(50)).string(), "--quiet"},
                      dir_ / "enqueue.out", dir_ / "enqueue.err");
  ASSERT_EQ(enqueue.wait(30s), 0) << enqueue.err();
  const uint16_t port = unused_loopback_port();
  PeerProcess run({RINGMAIL_BINARY, "run", "--db", db, "--relay", (*sink)->address(),
                   "--until-done", "--quiet", "--summary", "json", "--metrics-listen",
                   "127.0.0.1:" + std::to_string(port), "--metrics-linger", "30"},
                  dir_ / "run.out", dir_ / "run.err");
  auto summary = wait_for_summary(run);
  ASSERT_FALSE(summary.is_null()) << run.err();
  EXPECT_EQ(summary["delivered"], 50);
  auto scrape = http_get(port, "/metrics", 2s);
  ASSERT_TRUE(scrape) << "no exporter after the run: " << run.err();
  EXPECT_EQ(sample(scrape->body, "ringmail_recipients_total{outcome=\"delivered\"}"), 50);
  EXPECT_EQ(run.stop(), 0);
}

}  // namespace
}  // namespace ringmail::test

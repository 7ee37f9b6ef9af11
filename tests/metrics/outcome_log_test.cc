// The outcome log: line formats (logfmt and JSON Lines, with hostile values), many shard
// threads logging at once, and lines dropped (and counted) rather than blocking a shard.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "metrics/outcome_log.h"

namespace ringmail::metrics {
namespace {

OutcomeLine sample_line() {
  OutcomeLine l;
  l.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123));
  l.shard = 3;
  l.transaction = 42;
  l.tag = 7;
  l.sender = "bulk@example.com";
  l.recipient = "a@example.org";
  l.status = smtp::RecipientStatus::kBounced;
  l.reply = smtp::Reply{550, {5, 1, 1}, "no such \"user\"\nhere\\"};
  return l;
}

TEST(metrics_outcome_log, LogfmtQuotesWhatNeedsIt) {
  EXPECT_EQ(format_outcome_line(sample_line(), LogFormat::kLogfmt),
            "ts=2023-11-14T22:13:20.123Z event=recipient_outcome shard=3 transaction=42 tag=7 "
            "from=bulk@example.com rcpt=a@example.org status=bounced attempted=true tls=none code=550 "
            "enhanced=5.1.1 reply=\"no such \\\"user\\\"\\nhere\\\\\"");
  OutcomeLine l = sample_line();
  l.reply = {};
  l.sender = "";
  l.recipient = "x=y@a b\r\x01";
  EXPECT_EQ(format_outcome_line(l, LogFormat::kLogfmt),
            "ts=2023-11-14T22:13:20.123Z event=recipient_outcome shard=3 transaction=42 tag=7 "
            "from=\"\" rcpt=\"x=y@a b\\r\\x01\" status=bounced attempted=true tls=none code=0 "
            "enhanced=\"\" reply=\"\"");
}

TEST(metrics_outcome_log, TlsVersionCipherAndVerificationAreWritten) {
  OutcomeLine l = sample_line();
  l.transport_security = "TLSv1.3 TLS_AES_256_GCM_SHA384 verified resumed";
  const std::string logfmt = format_outcome_line(l, LogFormat::kLogfmt);
  EXPECT_NE(logfmt.find(" attempted=true tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 verified=true code=550 "),
            std::string::npos)
      << logfmt;
  l.transport_security = "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256 unverified";
  auto j = nlohmann::json::parse(format_outcome_line(l, LogFormat::kJson));
  EXPECT_EQ(j["tls"], "TLSv1.2");
  EXPECT_EQ(j["cipher"], "ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_EQ(j["verified"], false);
  l.transport_security = "";
  j = nlohmann::json::parse(format_outcome_line(l, LogFormat::kJson));
  EXPECT_EQ(j["tls"], "none");
  EXPECT_FALSE(j.contains("cipher"));
  EXPECT_FALSE(j.contains("verified"));
}

TEST(metrics_outcome_log, JsonLinesAreValidJsonEvenForInvalidUtf8) {
  OutcomeLine l = sample_line();
  l.reply.text = "bad \xff byte";
  const std::string line = format_outcome_line(l, LogFormat::kJson);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["ts"], "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(j["event"], "recipient_outcome");
  EXPECT_EQ(j["rcpt"], "a@example.org");
  EXPECT_EQ(j["status"], "bounced");
  EXPECT_EQ(j["code"], 550);
  EXPECT_EQ(j["enhanced"], "5.1.1");
  EXPECT_EQ(j["tag"], 7);
  EXPECT_EQ(j["attempted"], true);
}

TEST(metrics_outcome_log, NothingSentIsNotAttemptedNotADeferral) {
  OutcomeLine l = sample_line();
  l.status = smtp::RecipientStatus::kDeferred;
  l.attempted = false;  // a drain gave it back unsent
  EXPECT_EQ(nlohmann::json::parse(format_outcome_line(l, LogFormat::kJson))["status"],
            "not_attempted");
  EXPECT_NE(format_outcome_line(l, LogFormat::kLogfmt).find(" status=not_attempted "),
            std::string::npos);
  l.parked = true;
  EXPECT_EQ(nlohmann::json::parse(format_outcome_line(l, LogFormat::kJson))["status"], "parked");
  l.parked = false;
  l.attempted = true;
  EXPECT_EQ(nlohmann::json::parse(format_outcome_line(l, LogFormat::kJson))["status"], "deferred");
}

class OutcomeLogFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ringmail_log_XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::vector<std::string> lines(const std::string& name) {
    std::ifstream f(dir_ / name);
    std::vector<std::string> out;
    for (std::string l; std::getline(f, l);) out.push_back(l);
    return out;
  }
  static smtp::TransactionOutcome outcome(uint64_t id, size_t recipients) {
    smtp::TransactionOutcome o;
    o.transaction.id = id;
    o.transaction.sender = "s@example.com";
    o.transaction.body = std::make_shared<const std::string>("never logged\r\n");
    for (size_t i = 0; i < recipients; ++i) {
      o.transaction.recipients.push_back("r" + std::to_string(id) + "-" + std::to_string(i) + "@x.test");
      o.transaction.recipient_tags.push_back(id * 1000 + i);
      o.recipients.push_back({smtp::RecipientStatus::kDelivered, {250, {2, 0, 0}, "ok"}});
    }
    return o;
  }
  std::filesystem::path dir_;
};

TEST_F(OutcomeLogFile, ConcurrentShardsEveryLineWrittenOnce) {
  constexpr unsigned kShards = 4, kTransactions = 500, kRecipients = 3;
  auto logger = OutcomeLogger::open((dir_ / "out.log").string(),
                                    {.format = LogFormat::kJson, .shards = kShards});
  ASSERT_TRUE(logger) << logger.error();
  std::vector<std::thread> shards;
  for (unsigned s = 0; s < kShards; ++s) {
    shards.emplace_back([&, s] {
      for (unsigned t = 0; t < kTransactions; ++t)
        (*logger)->on_transaction_finished(s, outcome(s * kTransactions + t, kRecipients));
    });
  }
  for (auto& t : shards) t.join();
  (*logger)->flush();
  auto written = lines("out.log");
  ASSERT_EQ(written.size(), size_t(kShards * kTransactions * kRecipients));
  EXPECT_EQ((*logger)->lines_written(), written.size());
  EXPECT_EQ((*logger)->lines_dropped(), 0u);
  std::set<std::string> recipients;
  for (const auto& l : written) {
    auto j = nlohmann::json::parse(l);
    recipients.insert(j["rcpt"].get<std::string>());
    EXPECT_EQ(l.find("never logged"), std::string::npos);
  }
  EXPECT_EQ(recipients.size(), written.size());
}

TEST_F(OutcomeLogFile, TheTransportSecurityOfAnOutcomeReachesEachOfItsLines) {
  auto logger = OutcomeLogger::open((dir_ / "out.log").string(), {});
  ASSERT_TRUE(logger) << logger.error();
  auto protected_outcome = outcome(1, 2);
  protected_outcome.transport_security = "TLSv1.3 TLS_AES_128_GCM_SHA256 unverified";
  (*logger)->on_transaction_finished(0, protected_outcome);
  (*logger)->on_transaction_finished(0, outcome(2, 1));
  (*logger)->flush();
  auto written = lines("out.log");
  ASSERT_EQ(written.size(), 3u);
  for (size_t i = 0; i < 2; ++i)
    EXPECT_NE(written[i].find(" tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 verified=false "),
              std::string::npos)
        << written[i];
  EXPECT_NE(written[2].find(" tls=none code=250 "), std::string::npos) << written[2];
}

TEST_F(OutcomeLogFile, DropsAndCountsRatherThanBlockingAShard) {
  // The logger drains every 10 s only, so the per-shard bound is hit at once.
  auto logger = OutcomeLogger::open(
      (dir_ / "out.log").string(),
      {.shards = 1, .max_queued_lines_per_shard = 10, .drain_interval = std::chrono::seconds(10)});
  ASSERT_TRUE(logger) << logger.error();
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t t = 0; t < 100; ++t) (*logger)->on_transaction_finished(0, outcome(t, 2));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  (*logger)->flush();
  EXPECT_EQ((*logger)->lines_written(), 10u);
  EXPECT_EQ((*logger)->lines_dropped(), 190u);
  std::vector<prometheus::MetricFamily> families;
  (*logger)->metrics_provider()(families);
  ASSERT_EQ(families.size(), 2u);
  EXPECT_EQ(families[1].name, "ringmail_log_lines_dropped_total");
  EXPECT_EQ(families[1].metric.at(0).counter.value, 190);
  logger->reset();
  EXPECT_EQ(lines("out.log").size(), 10u);
}

// logrotate renames the file and sends SIGHUP: lines before the reopen stay in the
// renamed file, the rest go to a new file of the old name. A path that cannot be opened
// again keeps the old file.
TEST_F(OutcomeLogFile, ReopenStartsANewFileUnderTheSameName) {
  auto logger = OutcomeLogger::open((dir_ / "out.log").string(), {});
  ASSERT_TRUE(logger) << logger.error();
  (*logger)->on_transaction_finished(0, outcome(1, 2));
  (*logger)->flush();
  std::filesystem::rename(dir_ / "out.log", dir_ / "out.log.1");
  (*logger)->on_transaction_finished(0, outcome(2, 1));  // queued before the reopen
  (*logger)->reopen();
  (*logger)->flush();
  (*logger)->on_transaction_finished(0, outcome(3, 3));
  (*logger)->flush();
  EXPECT_EQ(lines("out.log.1").size(), 3u);
  EXPECT_EQ(lines("out.log").size(), 3u);
  EXPECT_NE(lines("out.log")[0].find("rcpt=r3-0@x.test"), std::string::npos);

  std::filesystem::rename(dir_ / "out.log", dir_ / "out.log.2");
  std::filesystem::create_directory(dir_ / "out.log");  // cannot be opened as a file
  (*logger)->reopen();
  (*logger)->on_transaction_finished(0, outcome(4, 1));
  (*logger)->flush();
  EXPECT_EQ(lines("out.log.2").size(), 4u);  // still the old file
}

TEST_F(OutcomeLogFile, OpenNamesTheFileItCannotOpen) {
  auto logger = OutcomeLogger::open((dir_ / "missing" / "x.log").string(), {});
  ASSERT_FALSE(logger);
  EXPECT_NE(logger.error().find("missing/x.log"), std::string::npos) << logger.error();
}

}  // namespace
}  // namespace ringmail::metrics

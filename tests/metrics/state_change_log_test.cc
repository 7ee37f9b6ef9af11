// The database's state lines of the outcome log (event=recipient_state): their format in
// both encodings, and that they follow the outcome lines of their attempts in the file.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "metrics/outcome_log.h"

namespace ringmail::metrics {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

StateChangeLine deferred_line() {
  StateChangeLine l;
  l.time = system_clock::time_point(milliseconds(1'700'000'000'123));
  l.tag = 7;
  l.recipient = "a@example.org";
  l.state = "deferred";
  l.attempts = 2;
  l.next_attempt = system_clock::time_point(milliseconds(1'700'000'120'000));
  l.reply = smtp::Reply{451, {4, 2, 2}, "mailbox full"};
  return l;
}

TEST(metrics_state_log, LogfmtSaysAttemptsAndTheNextAttempt) {
  EXPECT_EQ(format_state_change_line(deferred_line(), LogFormat::kLogfmt),
            "ts=2023-11-14T22:13:20.123Z event=recipient_state tag=7 rcpt=a@example.org "
            "state=deferred attempts=2 next_attempt=2023-11-14T22:15:20.000Z code=451 "
            "enhanced=4.2.2 reply=\"mailbox full\"");
  StateChangeLine bounced = deferred_line();
  bounced.state = "bounced";
  bounced.next_attempt.reset();
  bounced.suppressed = true;
  bounced.reply = smtp::Reply{550, {5, 1, 1}, "no such user"};
  EXPECT_EQ(format_state_change_line(bounced, LogFormat::kLogfmt),
            "ts=2023-11-14T22:13:20.123Z event=recipient_state tag=7 rcpt=a@example.org "
            "state=bounced attempts=2 suppressed=true code=550 enhanced=5.1.1 "
            "reply=\"no such user\"");
}

TEST(metrics_state_log, JsonCarriesTheSameFields) {
  StateChangeLine l = deferred_line();
  l.reply.text = "bad \xff byte";
  auto j = nlohmann::json::parse(format_state_change_line(l, LogFormat::kJson));
  EXPECT_EQ(j["event"], "recipient_state");
  EXPECT_EQ(j["tag"], 7);
  EXPECT_EQ(j["state"], "deferred");
  EXPECT_EQ(j["attempts"], 2);
  EXPECT_EQ(j["next_attempt"], "2023-11-14T22:15:20.000Z");
  EXPECT_FALSE(j.contains("suppressed"));
  EXPECT_EQ(j["enhanced"], "4.2.2");
}

TEST(metrics_state_log, StateLinesFollowTheirOutcomeLinesAndAreCounted) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ringmail_state_XXXXXX").string();
  const std::filesystem::path dir = ::mkdtemp(tmpl.data());
  {
    auto logger = OutcomeLogger::open((dir / "out.log").string(), {.format = LogFormat::kJson});
    ASSERT_TRUE(logger) << logger.error();
    smtp::TransactionOutcome o;
    o.transaction.id = 1;
    o.transaction.sender = "s@example.com";
    o.transaction.recipients = {"a@example.org"};
    o.transaction.recipient_tags = {7};
    o.recipients.push_back({smtp::RecipientStatus::kDeferred, {451, {4, 2, 2}, "mailbox full"}});
    (*logger)->on_transaction_finished(0, o);
    (*logger)->log_state_changes({deferred_line()});
    (*logger)->flush();
    EXPECT_EQ((*logger)->lines_written(), 2u);
    EXPECT_EQ((*logger)->lines_dropped(), 0u);
  }
  std::ifstream f(dir / "out.log");
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["event"], "recipient_outcome");
  EXPECT_EQ(nlohmann::json::parse(lines[1])["event"], "recipient_state");
  std::filesystem::remove_all(dir);
}

TEST(metrics_state_log, DropsAndCountsWhenTheWriterFallsBehind) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ringmail_state_XXXXXX").string();
  const std::filesystem::path dir = ::mkdtemp(tmpl.data());
  {
    auto logger = OutcomeLogger::open(
        (dir / "out.log").string(),
        {.max_queued_lines_per_shard = 2, .drain_interval = std::chrono::hours(1)});
    ASSERT_TRUE(logger) << logger.error();
    (*logger)->log_state_changes({deferred_line(), deferred_line()});
    (*logger)->log_state_changes({deferred_line()});  // over the bound: dropped
    EXPECT_EQ((*logger)->lines_dropped(), 1u);
    (*logger)->flush();
    EXPECT_EQ((*logger)->lines_written(), 2u);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ringmail::metrics

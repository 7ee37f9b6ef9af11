#include "app/summary.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace ringmail::app {
namespace {

RunResult finished_run() {
  RunResult r;
  r.delivery.recipients_delivered = 990;
  r.delivery.recipients_deferred = 6;
  r.delivery.recipients_bounced = 4;
  r.delivery.transactions_finished = 10;
  r.delivery.connections_opened = 3;
  r.delivery.connection_failures = 1;
  r.delivery.recipients_by_reply_code[250] = 990;
  r.delivery.recipients_by_reply_code[451] = 5;
  r.delivery.recipients_by_reply_code[0] = 1;
  r.delivery.recipients_by_reply_code[550] = 4;
  r.rejected = 2;
  r.taken = 1000;
  r.source_exhausted = true;
  r.elapsed_s = 2.0;
  return r;
}

TEST(app_summary, JsonHasEveryKey) {
  const std::string text = format_summary_json(finished_run());
  EXPECT_EQ(text.find('\n'), std::string::npos);
  auto j = nlohmann::json::parse(text);
  for (const char* key :
       {"delivered", "deferred", "bounced", "rejected", "not_attempted", "messages", "recipients",
        "elapsed_s", "messages_per_s", "recipients_per_s", "connections_opened",
        "connection_failures", "reply_codes", "interrupted"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["delivered"], 990);
  EXPECT_EQ(j["deferred"], 6);
  EXPECT_EQ(j["bounced"], 4);
  EXPECT_EQ(j["rejected"], 2);
  EXPECT_EQ(j["not_attempted"], 0);
  EXPECT_EQ(j["messages"], 10);
  EXPECT_EQ(j["recipients"], 1000);
  EXPECT_EQ(j["elapsed_s"], 2.0);
  EXPECT_EQ(j["messages_per_s"], 5.0);
  EXPECT_EQ(j["recipients_per_s"], 500.0);
  EXPECT_EQ(j["connections_opened"], 3);
  EXPECT_EQ(j["connection_failures"], 1);
  EXPECT_EQ(j["reply_codes"], (nlohmann::json{{"250", 990}, {"451", 5}, {"550", 4}, {"0", 1}}));
  EXPECT_EQ(j["interrupted"], false);
}

TEST(app_summary, TextNamesEveryOutcomeAndTheTopReplyCodes) {
  const std::string text = format_summary_text(finished_run());
  for (const char* part :
       {"delivered", "deferred", "bounced", "rejected", "not attempted", "messages", "5 msg/s",
        "500 rcpt/s", "3  attempted, 1 failed", "reply codes    250: 990, 451: 5, 550: 4, 0 (local): 1"}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << " not in:\n" << text;
  }
}

TEST(app_summary, TextShowsOnlyTheTopFiveCodes) {
  RunResult r;
  for (int code : {250, 251, 421, 450, 451, 550, 552})
    r.delivery.recipients_by_reply_code[code] = 1;
  const std::string text = format_summary_text(r);
  EXPECT_NE(text.find("250: 1, 251: 1, 421: 1, 450: 1, 451: 1 (+2 more)"), std::string::npos)
      << text;
}

TEST(app_summary, TakenButUnfinishedCountsAsNotAttempted) {
  RunResult r = finished_run();
  r.taken = 1010;
  r.delivery.recipients_not_attempted = 5;
  r.interrupted = true;
  auto j = nlohmann::json::parse(format_summary_json(r));
  EXPECT_EQ(j["not_attempted"], 10);  // 5 reported + (1010 taken - 1005 finished)
  EXPECT_EQ(j["interrupted"], true);
}

TEST(app_summary, ExitStatus) {
  RunResult all;
  all.delivery.recipients_delivered = 5;
  all.taken = 5;
  all.source_exhausted = true;
  EXPECT_EQ(exit_status(all), 0);

  RunResult rejected = all;
  rejected.rejected = 1;
  EXPECT_EQ(exit_status(rejected), 1);

  RunResult deferred = all;
  deferred.taken = 6;
  deferred.delivery.recipients_deferred = 1;
  EXPECT_EQ(exit_status(deferred), 1);

  RunResult drained = all;
  drained.source_exhausted = false;  // the rest of the file was never read
  EXPECT_EQ(exit_status(drained), 1);

  RunResult empty;
  empty.source_exhausted = true;
  EXPECT_EQ(exit_status(empty), 0);
}

}  // namespace
}  // namespace ringmail::app

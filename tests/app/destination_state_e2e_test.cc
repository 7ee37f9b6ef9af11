// Destination-level backoff across runs, as a user sees it: the real binary against a
// relay that refuses connections, then against a live smtp-sink. Judged by `status
// --json`, the run's JSON summary and the database.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "tests/app/ringmail_binary.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using Result = RingmailResult;

int64_t sql_int(const fs::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr);
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt* st = nullptr;
  int64_t v = -1;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    if (rc == SQLITE_DONE) v = sqlite3_changes(h);
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return v;
}

class DestinationState : public RingmailBinaryTest {
 protected:
  void SetUp() override {
    RingmailBinaryTest::SetUp();
    std::ofstream(dir_ / "m.eml") << "From: a@ringmail.test\nSubject: e2e\n\nhello\n";
    recipients(kRecipients);
    // A short own backoff (1 s) so the pause (60 s) is what holds the recipients back;
    // small claims and few connections so the pause is seen before everything is claimed.
    config("[retry]\nfirst_delay = 1\n[storage]\nclaim_batch = 100\n"
           "[pool]\nmax_connections = 2\nmax_recipients_per_transaction = 50\n");
    db_ = dir_ / "q.db";
  }

  Result deliver(const std::string& relay) {
    return run({"run", "--db", db_.string(), "--config", (dir_ / "c.toml").string(), "--relay",
                relay, "--until-done", "--shards", "1", "--quiet", "--summary", "json"});
  }

  nlohmann::json status() {
    Result r = run({"status", "--db", db_.string(), "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }

  static constexpr size_t kRecipients = 2000;
  fs::path db_;
};

TEST_F(DestinationState, ADeadRelayIsPausedInTheDatabaseAndDeliveredAfterThePause) {
  Result enq = run({"enqueue", "--db", db_.string(), "--from", "a@ringmail.test", "--message",
                    (dir_ / "m.eml").string(), "--recipients", (dir_ / "r.txt").string(),
                    "--quiet"});
  ASSERT_EQ(enq.exit_code, 0) << enq.err;

  const int64_t before_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  const uint16_t dead_port = unused_loopback_port();
  const std::string dead_relay = "127.0.0.1:" + std::to_string(dead_port);
  Result dead = deliver(dead_relay);
  ASSERT_EQ(dead.exit_code, 0) << dead.err;
  auto summary = nlohmann::json::parse(dead.out);
  EXPECT_EQ(summary["delivered"], 0);
  // Three refused connections set the only host aside (no more are opened at once until
  // one works); the rest of the work was deferred without a connection. (On loopback the
  // feeder claims everything within milliseconds, before the pause's commit, so whether
  // some recipients stay unclaimed is a race and not asserted.)
  EXPECT_EQ(summary["connections_opened"].get<int64_t>(), 3) << dead.out;
  const int64_t attempts = sql_int(db_, "SELECT sum(attempts) FROM recipients");

  auto s = status();
  ASSERT_EQ(s["destinations"].size(), 1u) << s.dump();
  const auto& d = s["destinations"][0];
  EXPECT_EQ(d["name"], dead_relay);
  EXPECT_EQ(d["state"], "paused");
  const int64_t until = d["paused_until_ms"].get<int64_t>();
  EXPECT_GE(until, before_ms + 50'000);  // the 60 s default pause
  EXPECT_EQ(d["last_code"], 0);
  EXPECT_NE(d["last_text"].get<std::string>().find("refused"), std::string::npos) << d.dump();
  // Nobody waits less than the pause, although their own backoff is 1 s.
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM recipients WHERE state IN ('queued','deferred')"),
            static_cast<int64_t>(kRecipients));
  EXPECT_GE(sql_int(db_, "SELECT min(next_attempt_at) FROM recipients"), until);

  // A new run during the pause does not learn again that the relay is dead: nothing is
  // due, so it opens no connection and counts no attempt.
  Result paused = deliver("127.0.0.1:" + std::to_string(unused_loopback_port()));
  ASSERT_EQ(paused.exit_code, 0) << paused.err;
  EXPECT_EQ(nlohmann::json::parse(paused.out)["connections_opened"], 0) << paused.out;
  EXPECT_EQ(sql_int(db_, "SELECT sum(attempts) FROM recipients"), attempts);

  // The pause is over (the clock moved on: rather than waiting 60 s, the times are moved
  // back), and the relay is alive now: everything is delivered and the relay is up.
  ASSERT_GT(sql_int(db_, "UPDATE recipient_rows SET next_attempt_at = next_attempt_at - 120000"), 0);
  ASSERT_EQ(sql_int(db_, "UPDATE destinations SET paused_until = paused_until - 120000"), 1);
  SmtpSinkOptions revived;
  revived.port = dead_port;  // the same relay, alive again
  auto sink = SmtpSinkProcess::start(revived);
  ASSERT_TRUE(sink) << sink.error();
  Result live = deliver((*sink)->address());
  ASSERT_EQ(live.exit_code, 0) << live.err;
  EXPECT_EQ(nlohmann::json::parse(live.out)["delivered"], kRecipients);
  EXPECT_EQ((*sink)->recipients_received(), kRecipients);
  EXPECT_EQ(status()["destinations"].size(), 0u);
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM destinations WHERE name = '" + dead_relay +
                             "' AND state = 'up' AND failures = 0"),
            1);
}

}  // namespace
}  // namespace ringmail::test

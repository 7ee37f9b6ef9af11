// What the real binary prints for an operator: `status` with hostile reply texts (control
// bytes, invalid UTF-8) and many domains, `suppress` with a config file, a later flag
// overriding an earlier one (as `scripts/demo EXTRA...` relies on) and the metrics address.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tests/app/queue_database.h"
#include "tests/app/ringmail_binary.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;
using Result = RingmailResult;

// ESC [2J (clear the screen), BEL, a C1 CSI, and bytes that are not UTF-8 at all.
const std::string kHostileText = "try \x1B[2Jlater\x07 \xC2\x9B" "31m \xFF\xFE end";

// Runs `sql` on the database, with ?1 bound to `text` byte for byte when given (SQLite does
// not check UTF-8); the changed row count, or -1 on an error.
int exec_sql(const fs::path& db, const std::string& sql,
             const std::optional<std::string>& text = std::nullopt) {
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(h);
    return -1;
  }
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt* st = nullptr;
  int changed = -1;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
      (!text || sqlite3_bind_text(st, 1, text->data(), static_cast<int>(text->size()),
                                  SQLITE_TRANSIENT) == SQLITE_OK) &&
      sqlite3_step(st) == SQLITE_DONE)
    changed = sqlite3_changes(h);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return changed;
}

class OperatorOutput : public RingmailBinaryTest {
 protected:
  void SetUp() override {
    RingmailBinaryTest::SetUp();
    std::ofstream(dir_ / "m.eml") << "From: a@ringmail.test\nSubject: e2e\n\nhello\n";
    db_ = dir_ / "q.db";
  }

  // Enqueues `lines` (one address each) as `campaign`.
  void enqueue(const std::vector<std::string>& lines, const std::string& campaign = "c1") {
    const fs::path file = dir_ / (campaign + ".txt");
    std::ofstream out(file);
    for (const std::string& line : lines) out << line << '\n';
    out.close();
    Result r = run({"enqueue", "--db", db_.string(), "--from", "a@ringmail.test", "--message",
                    (dir_ / "m.eml").string(), "--recipients", file.string(), "--campaign",
                    campaign, "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  Result status(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"status", "--db", db_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(args);
  }

  fs::path db_;
};

TEST_F(OperatorOutput, StatusEscapesHostileReplyTextsAndJsonSurvivesInvalidUtf8) {
  enqueue({"one@example.test", "two@example.test"});
  ASSERT_EQ(exec_sql(db_,
                           "UPDATE recipient_rows SET state = 'deferred', attempts = 1, "
                           "last_code = 451, last_enhanced = '4.3.0', last_text = ?1",
                           kHostileText),
            2);
  const int64_t until = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count() +
                        3600000;  // paused for another hour
  ASSERT_EQ(exec_sql(db_,
                           "INSERT INTO destinations (name, state, paused_until, failures, "
                           "last_code, last_enhanced, last_text, updated_at) VALUES "
                           "('relay.test', 'paused', " + std::to_string(until) +
                               ", 1, 421, '4.4.2', ?1, 0)",
                           kHostileText),
            1);

  Result text = status();
  ASSERT_EQ(text.exit_code, 0) << text.err;
  // Not one control byte or invalid byte reaches the terminal (newlines end lines).
  for (unsigned char c : text.out) {
    EXPECT_TRUE(c == '\n' || (c >= 0x20 && c != 0x7F && c < 0x80)) << int(c) << " in\n" << text.out;
  }
  const std::string escaped = "try \\x1B[2Jlater\\x07 \\xC2\\x9B31m \\xFF\\xFE end";
  EXPECT_NE(text.out.find("last reply 451 4.3.0 " + escaped), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("last reply 421 4.4.2 " + escaped), std::string::npos) << text.out;
  // The counts say what they count, in the singular when there is one.
  EXPECT_NE(text.out.find(", 1 attempt, next"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("(1 failure since it was last up)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("top last replies: 451 4.3.0 (2 recipients)"), std::string::npos)
      << text.out;

  Result json = status({"--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto j = nlohmann::json::parse(json.out);  // valid UTF-8, or this throws
  const std::string replaced = j["oldest_deferred"]["last_text"];
  EXPECT_EQ(replaced, "try \x1B[2Jlater\x07 \xC2\x9B" "31m \xEF\xBF\xBD\xEF\xBF\xBD end");
  EXPECT_EQ(j["destinations"][0]["last_text"], replaced);
  EXPECT_EQ(j["destinations"][0]["failures"], 1);
  // JSON escapes the control characters itself: none reaches the terminal raw.
  EXPECT_EQ(json.out.find('\x1B'), std::string::npos);
  EXPECT_EQ(json.out.find('\x07'), std::string::npos);
}

TEST_F(OperatorOutput, StatusNamesTheBusiestDomainsAndSumsTheRest) {
  // 30 domains: d<i>.test has i+1 recipients; the 5 of d0-d4 are then delivered, so they
  // have no work left and rank last however many recipients they had.
  std::vector<std::string> lines;
  for (int d = 0; d < 30; ++d)
    for (int i = 0; i <= d; ++i)
      lines.push_back("u" + std::to_string(i) + "@d" + std::to_string(d) + ".test");
  enqueue(lines);
  ASSERT_EQ(exec_sql(db_, "UPDATE recipient_rows SET state = 'delivered' WHERE domain IN "
                          "('d0.test', 'd1.test', 'd2.test', 'd3.test', 'd4.test')"),
            15);

  Result text = status();
  ASSERT_EQ(text.exit_code, 0) << text.err;
  std::vector<std::string> domain_lines;
  std::istringstream in(text.out);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("domain ")) domain_lines.push_back(line);
  ASSERT_EQ(domain_lines.size(), 20u) << text.out;
  EXPECT_EQ(domain_lines.front(), "domain d29.test: queued 30 (total 30)");  // most work first
  EXPECT_EQ(domain_lines.back(), "domain d10.test: queued 11 (total 11)");
  // d5-d9 (40 queued) and d0-d4 (15 delivered).
  EXPECT_NE(text.out.find("10 other domains: queued 40 delivered 15 (total 55) (--domains 0 "
                          "lists them all)"),
            std::string::npos)
      << text.out;

  Result all = status({"--domains", "0"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(std::count(all.out.begin(), all.out.end(), '\n') -
                std::count(text.out.begin(), text.out.end(), '\n'),
            10 - 1)
      << all.out;  // ten more domain lines, no "other domains" line
  EXPECT_EQ(all.out.find("other domain"), std::string::npos) << all.out;

  Result json = status({"--json", "--domains", "3"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto j = nlohmann::json::parse(json.out);
  ASSERT_EQ(j["domains"].size(), 3u) << j.dump();
  EXPECT_TRUE(j["domains"].contains("d29.test"));
  EXPECT_TRUE(j["domains"].contains("d27.test"));
  EXPECT_EQ(j["other_domains"]["domains"], 27);
  EXPECT_EQ(j["other_domains"]["delivered"], 15);
  EXPECT_EQ(j["other_domains"]["total"], 465 - 30 - 29 - 28);
  auto every = nlohmann::json::parse(status({"--json", "--domains", "0"}).out);
  EXPECT_EQ(every["domains"].size(), 30u);
  EXPECT_EQ(every["other_domains"]["domains"], 0);

  // --campaign still narrows it: another campaign's domain is not counted.
  enqueue({"x@other.test"}, "c2");
  auto c2 = nlohmann::json::parse(status({"--json", "--campaign", "c2"}).out);
  EXPECT_EQ(c2["domains"].size(), 1u) << c2.dump();
  EXPECT_EQ(c2["domains"]["other.test"]["queued"], 1);
  EXPECT_EQ(c2["other_domains"]["domains"], 0);
}

// Whoever scheduled a campaign with --send-at asks `status --campaign` when it starts: the
// earliest due time of that campaign's queued or deferred recipients, not the queue's.
TEST_F(OperatorOutput, StatusOfACampaignSaysWhenThatCampaignIsNextDue) {
  enqueue({"now@example.test"}, "today");
  std::ofstream(dir_ / "later.txt") << "a@example.test\nb@example.test\n";
  Result scheduled = run({"enqueue", "--db", db_.string(), "--from", "a@ringmail.test",
                          "--message", (dir_ / "m.eml").string(), "--recipients",
                          (dir_ / "later.txt").string(), "--campaign", "later", "--send-at",
                          "2999-01-01T00:00:00Z", "--quiet"});
  ASSERT_EQ(scheduled.exit_code, 0) << scheduled.err;

  // The whole queue: its earliest row is today's, and the key is the one it always was.
  auto all = nlohmann::json::parse(status({"--json"}).out);
  ASSERT_TRUE(all["next_due_at"].is_string()) << all.dump();
  EXPECT_LT(all["next_due_at"].get<std::string>(), "2999") << all.dump();
  EXPECT_FALSE(all.contains("campaign_next_due_at")) << all.dump();

  auto later = nlohmann::json::parse(status({"--json", "--campaign", "later"}).out);
  EXPECT_EQ(later["campaign_next_due_at"], "2999-01-01T00:00:00Z") << later.dump();
  EXPECT_FALSE(later.contains("next_due_at")) << later.dump();  // not the queue's time
  Result text = status({"--campaign", "later"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("\nnext due: 2999-01-01T00:00:00Z (campaign later)\n"),
            std::string::npos)
      << text.out;

  // A deferred recipient's retry counts; in-flight and finished ones do not.
  ASSERT_EQ(exec_sql(db_, "UPDATE recipient_rows SET state = 'deferred', attempts = 1, "
                          "next_attempt_at = 16725225600000 WHERE address = 'a@example.test'"),
            1);  // 2500-01-01
  ASSERT_EQ(exec_sql(db_, "UPDATE recipient_rows SET state = 'in_flight', next_attempt_at = 0 "
                          "WHERE address = 'b@example.test'"),
            1);
  later = nlohmann::json::parse(status({"--json", "--campaign", "later"}).out);
  EXPECT_EQ(later["campaign_next_due_at"], "2500-01-01T00:00:00Z") << later.dump();
  ASSERT_EQ(exec_sql(db_, "UPDATE recipient_rows SET state = 'delivered' WHERE address = "
                          "'a@example.test'"),
            1);
  later = nlohmann::json::parse(status({"--json", "--campaign", "later"}).out);
  EXPECT_TRUE(later["campaign_next_due_at"].is_null()) << later.dump();
  text = status({"--campaign", "later"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out.find("next due"), std::string::npos) << text.out;
  // The other campaign's row is still due: the queue has work, this campaign has none.
  EXPECT_TRUE(nlohmann::json::parse(status({"--json"}).out)["next_due_at"].is_string());
}

TEST_F(OperatorOutput, SuppressSubcommandsTakeTheConfigFile) {
  fs::path cfg = config("[storage]\npath = \"" + db_.string() + "\"\n");
  Result add = run({"suppress", "add", "gone@example.test", "--config", cfg.string()});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  Result list = run({"suppress", "list", "--config", cfg.string()});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("gone@example.test\tmanual"), std::string::npos) << list.out;
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM suppressions"), 1);
}

// scripts/demo passes --rcpt-per-txn 10 (and more) before the user's own options.
TEST_F(OperatorOutput, ALaterFlagOverridesTheDemosOwn) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  Result r = run({"send", "--relay", (*sink)->address(), "--from", "a@ringmail.test", "--message",
                  (dir_ / "m.eml").string(), "--recipients", recipients(6).string(),
                  "--connections", "20", "--rcpt-per-txn", "10", "--db", db_.string(),
                  "--shards", "1", "--no-metrics", "--quiet", "--rcpt-per-txn", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ((*sink)->recipients_received(), 6u);
  EXPECT_EQ((*sink)->messages_received(), 6u);  // one recipient per transaction
}

TEST_F(OperatorOutput, MetricsOnPortZeroSaysWhichPortAndIpv6IsRefused) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  std::vector<std::string> args = {"send", "--relay", (*sink)->address(), "--from",
                                   "a@ringmail.test", "--message", (dir_ / "m.eml").string(),
                                   "--recipients", recipients(1).string(), "--no-db",
                                   "--shards", "1", "--quiet", "--metrics-listen"};
  auto with = [&](const std::string& listen) {
    auto a = args;
    a.push_back(listen);
    return a;
  };
  Result any = run(with("127.0.0.1:0"));
  ASSERT_EQ(any.exit_code, 0) << any.err;
  // (No std::regex: GCC 12 warns inside it under the sanitizers.)
  const std::string announced = "ringmail: serving metrics at http://127.0.0.1:";
  const size_t at = any.err.find(announced);
  ASSERT_NE(at, std::string::npos) << any.err;
  const size_t port_at = at + announced.size();
  const size_t slash = any.err.find("/metrics", port_at);
  ASSERT_NE(slash, std::string::npos) << any.err;
  EXPECT_GT(std::stoi(any.err.substr(port_at, slash - port_at)), 0) << any.err;

  for (const char* v6 : {"[::1]:0", "[::]:9464"}) {
    Result refused = run(with(v6));
    EXPECT_EQ(refused.exit_code, 2) << refused.err;
    EXPECT_NE(refused.err.find("IPv6 listen addresses are not supported by Debian's civetweb; "
                               "use 127.0.0.1:PORT or 0.0.0.0:PORT"),
              std::string::npos)
        << refused.err;
  }
  EXPECT_EQ((*sink)->recipients_received(), 1u);  // the refused runs sent nothing
}

}  // namespace
}  // namespace ringmail::test

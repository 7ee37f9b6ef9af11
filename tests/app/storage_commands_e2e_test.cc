// The durable commands as a user runs them: the real binary (enqueue, run, status,
// suppress) against real servers on loopback, including SIGKILL at random moments and a
// full disk. Judged by exit status, `status --json`, the database and what the server got.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "tests/app/queue_database.h"
#include "tests/app/ringmail_binary.h"
#include "tests/support/scripted_smtp_server.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using Result = RingmailResult;

class StorageCommands : public RingmailBinaryTest {
 protected:
  void SetUp() override {
    RingmailBinaryTest::SetUp();
    std::ofstream(dir_ / "m.eml") << "From: a@ringmail.test\nSubject: e2e\n\nhello\n";
    db_ = dir_ / "q.db";
  }

  std::vector<std::string> enqueue_args(const fs::path& rcpts) {
    return {"enqueue", "--db", db_.string(), "--from", "a@ringmail.test", "--message",
            (dir_ / "m.eml").string(), "--recipients", rcpts.string(), "--quiet"};
  }
  std::vector<std::string> run_args(const std::string& relay) {
    return {"run", "--db", db_.string(), "--relay", relay, "--until-done", "--shards", "1",
            "--quiet", "--summary", "json"};
  }

  nlohmann::json status() {
    Result r = run({"status", "--db", db_.string(), "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }

  uint64_t count(const std::string& state) {
    return static_cast<uint64_t>(
        sql_int(db_, "SELECT count(*) FROM recipients WHERE state = '" + state + "'"));
  }

  fs::path db_;
};

TEST_F(StorageCommands, EnqueueIsIdempotentAndRunDeliversEverything) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto args = enqueue_args(recipients(3000));
  args.insert(args.end(), {"--idempotency-key", "spring-1", "--campaign", "spring"});
  Result first = run(args);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  Result again = run(args);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM recipients"), 3000);
  EXPECT_EQ(status()["campaigns"]["spring"]["queued"], 3000);

  Result r = run(run_args((*sink)->address()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["delivered"], 3000);
  EXPECT_EQ(summary["states"]["delivered"], 3000);
  EXPECT_EQ((*sink)->recipients_received(), 3000u);
  auto s = status();
  EXPECT_EQ(s["campaigns"]["spring"]["delivered"], 3000);
  EXPECT_EQ(s["domains"]["example.test"]["delivered"], 3000);
  EXPECT_EQ(s["top_replies"][0]["code"], 250);
  // Nothing left: a second run sends nothing and exits 0.
  Result idle = run(run_args((*sink)->address()));
  EXPECT_EQ(idle.exit_code, 0) << idle.err;
  EXPECT_EQ((*sink)->recipients_received(), 3000u);
}

// `purge` after a delivered campaign: the final recipients go, the message keeps its
// idempotency key (a repeat still adds nothing) but not its body; queued ones stay.
TEST_F(StorageCommands, PurgeRemovesDeliveredRecipientsAndKeepsTheKey) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto args = enqueue_args(recipients(50));
  args.insert(args.end(), {"--idempotency-key", "receipts-1", "--campaign", "receipts"});
  ASSERT_EQ(run(args).exit_code, 0);
  ASSERT_EQ(run(run_args((*sink)->address())).exit_code, 0);
  auto later = enqueue_args(recipients(5));
  later.insert(later.end(), {"--send-at", "2999-01-01T00:00:00Z", "--campaign", "later"});
  ASSERT_EQ(run(later).exit_code, 0);

  Result young = run({"purge", "--db", db_.string(), "--older-than", "1d"});
  EXPECT_EQ(young.exit_code, 0) << young.err;
  EXPECT_NE(young.out.find("purged 0 recipients"), std::string::npos) << young.out;
  Result dry = run({"purge", "--db", db_.string(), "--older-than", "0s", "--dry-run"});
  EXPECT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("would purge 50 recipients"), std::string::npos) << dry.out;
  EXPECT_EQ(count("delivered"), 50u);

  Result purged = run({"purge", "--db", db_.string(), "--older-than", "0s"});
  EXPECT_EQ(purged.exit_code, 0) << purged.err;
  EXPECT_NE(purged.out.find("purged 50 recipients"), std::string::npos) << purged.out;
  EXPECT_NE(purged.out.find("(delivered 50)"), std::string::npos) << purged.out;
  EXPECT_EQ(count("delivered"), 0u);
  EXPECT_EQ(count("queued"), 5u);
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM messages WHERE length(body) = 0"), 1);
  ASSERT_EQ(run(args).exit_code, 0);  // the key is remembered: nothing added
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM recipients"), 5);

  EXPECT_EQ(run({"purge", "--db", db_.string(), "--older-than", "30"}).exit_code, 2);
  EXPECT_EQ(run({"purge", "--db", db_.string(), "--older-than", "0s", "--campaign", "nope"})
                .exit_code,
            2);
}

// Refused lines: exit 1 with the rest enqueued. Nothing accepted: exit 2, nothing
// committed, so the idempotency key stays free for the corrected file.
TEST_F(StorageCommands, EnqueueExitStatusSaysWhatWasRefused) {
  std::ofstream(dir_ / "mixed.txt") << "good1@example.test\nnot an address\ngood2@example.test\n";
  Result mixed = run(enqueue_args(dir_ / "mixed.txt"));
  EXPECT_EQ(mixed.exit_code, 1) << mixed.err;
  EXPECT_NE(mixed.err.find("mixed.txt:2:"), std::string::npos) << mixed.err;
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM recipients"), 2);

  std::ofstream(dir_ / "bad.txt") << "all@@bad\nworse\n";
  auto bad = enqueue_args(dir_ / "bad.txt");
  bad.insert(bad.end(), {"--idempotency-key", "k1"});
  Result refused = run(bad);
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find("no recipient accepted"), std::string::npos) << refused.err;
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM messages"), 1);  // only the first enqueue's

  auto fixed = enqueue_args(recipients(3));
  fixed.insert(fixed.end(), {"--idempotency-key", "k1"});
  Result ok = run(fixed);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM recipients"), 5);

  auto empty_key = enqueue_args(recipients(3));
  empty_key.insert(empty_key.end(), {"--idempotency-key", ""});
  EXPECT_EQ(run(empty_key).exit_code, 2);
}

// `run` as a service (no --until-done) is stopped by SIGTERM; having drained, it exits 0
// (systemd would otherwise mark every `systemctl stop` a failure).
TEST_F(StorageCommands, AServiceStoppedBySigtermExitsZero) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  ASSERT_EQ(run(enqueue_args(recipients(200))).exit_code, 0);
  Result r = run({"run", "--db", db_.string(), "--relay", (*sink)->address(), "--shards", "1",
                  "--quiet", "--summary", "json"},
                 {.signal_after = 1500ms, .signal = SIGTERM});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count("delivered"), 200u);
  EXPECT_EQ(nlohmann::json::parse(r.out)["interrupted"], true);
}

// `run` as a service keeps one engine and follows the database: a receipt enqueued while
// a slow destination is still being worked through goes out at once, not when that
// destination is done (it once waited for the end of the engine's pass).
TEST_F(StorageCommands, AServiceSendsAReceiptWhileASlowDestinationIsBusy) {
  ScriptedSmtpServerOptions so;
  so.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, 300ms};
    return std::nullopt;
  };
  auto slow = ScriptedSmtpServer::start(so);
  ASSERT_TRUE(slow) << slow.error();
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  std::ofstream(dir_ / "service.toml")
      << "[storage]\nidle_poll = 0.2\n[pool]\nmax_connections = 1\nmax_backlog = 0\n"
      << "max_recipients_per_transaction = 1\n[routes]\n"
      << "\"slow.test\" = \"127.0.0.1:" << (*slow)->port() << "\"\n"
      << "\"fast.test\" = \"" << (*sink)->address() << "\"\n";
  {
    std::ofstream rcpts(dir_ / "slow.txt");
    for (int i = 0; i < 15; ++i) rcpts << "s" << i << "@slow.test\n";
  }
  std::ofstream(dir_ / "receipt.txt") << "order-1@fast.test\n";
  ASSERT_EQ(run(enqueue_args(dir_ / "slow.txt")).exit_code, 0);
  RingmailProcess service({"run", "--db", db_.string(), "--config", (dir_ / "service.toml").string(),
                           "--shards", "1", "--quiet", "--summary", "json"},
                          dir_, {.signal_after = 7s});
  // The slow campaign is under way (about 4.5 s of it), then an order lands.
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (count("delivered") < 2 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  ASSERT_EQ(run(enqueue_args(dir_ / "receipt.txt")).exit_code, 0);
  int64_t slow_done_when_receipt_went = -1;
  while (std::chrono::steady_clock::now() < until) {
    if (sql_int(db_, "SELECT count(*) FROM recipients WHERE state = 'delivered' AND "
                     "domain = 'fast.test'") == 1) {
      slow_done_when_receipt_went = sql_int(
          db_, "SELECT count(*) FROM recipients WHERE state = 'delivered' AND domain = 'slow.test'");
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GE(slow_done_when_receipt_went, 0) << "the receipt was not delivered";
  EXPECT_LT(slow_done_when_receipt_went, 12) << "the receipt waited for the slow destination";
  Result r = service.wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Whatever of the slow campaign the stop cut short is queued again, nothing lost.
  EXPECT_EQ(count("delivered") + count("queued"), 16u);
  EXPECT_EQ(nlohmann::json::parse(r.out)["passes"], 1);  // one engine all along
  EXPECT_EQ((*sink)->recipients_received(), 1u);
}

// A receipt enqueued --urgent behind a campaign to the same (slow) relay: claimed before
// the campaign's earlier-due rows and queued ahead of the transactions the relay's pool
// already holds, so it goes out next instead of after the campaign.
TEST_F(StorageCommands, AnUrgentReceiptGoesAheadOfACampaignToTheSameRelay) {
  ScriptedSmtpServerOptions so;
  so.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, 200ms};
    return std::nullopt;
  };
  auto slow = ScriptedSmtpServer::start(so);
  ASSERT_TRUE(slow) << slow.error();
  std::ofstream(dir_ / "service.toml")
      << "[storage]\nidle_poll = 0.2\n[pool]\nmax_connections = 1\n"
      << "max_recipients_per_transaction = 1\n";
  {
    std::ofstream rcpts(dir_ / "campaign.txt");
    for (int i = 0; i < 30; ++i) rcpts << "c" << i << "@example.test\n";
  }
  std::ofstream(dir_ / "receipt.txt") << "order-1@example.test\n";
  ASSERT_EQ(run(enqueue_args(dir_ / "campaign.txt")).exit_code, 0);
  fs::create_directories(dir_ / "service");
  RingmailProcess service({"run", "--db", db_.string(), "--config", (dir_ / "service.toml").string(),
                           "--relay", "127.0.0.1:" + std::to_string((*slow)->port()), "--shards",
                           "1", "--quiet"},
                          dir_ / "service", {.signal_after = 20s});
  const auto until = std::chrono::steady_clock::now() + 15s;
  while (count("delivered") < 2 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  auto args = enqueue_args(dir_ / "receipt.txt");
  args.push_back("--urgent");
  ASSERT_EQ(run(args).exit_code, 0);
  int64_t campaign_done_when_receipt_went = -1;
  while (std::chrono::steady_clock::now() < until) {
    if (sql_int(db_, "SELECT state = 'delivered' FROM recipients WHERE address = "
                     "'order-1@example.test'") == 1) {
      campaign_done_when_receipt_went = sql_int(
          db_, "SELECT count(*) FROM recipients WHERE state = 'delivered' AND address LIKE 'c%'");
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(campaign_done_when_receipt_went, 0) << "the receipt was not delivered";
  // Without --urgent it went 31st (after all 30); now at most a few transactions after
  // it was enqueued (the one on the wire, and those its claim met on their way).
  EXPECT_LT(campaign_done_when_receipt_went, 12);
  ASSERT_EQ(::kill(service.pid(), SIGTERM), 0);
  Result r = service.wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count("delivered") + count("queued"), 31u);
}

// A fresh install: the service starts on a database that does not exist yet, creates it
// with the mode the umask allows (a group that enqueues can write it), waits for work and
// delivers what another process then enqueues. A one-shot --until-done still refuses.
TEST_F(StorageCommands, AServiceCreatesAMissingDatabaseThatItsGroupCanWrite) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  ASSERT_FALSE(fs::exists(db_));
  Result refused = run({"run", "--db", db_.string(), "--relay", (*sink)->address(),
                        "--until-done", "--quiet"});
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find("no such database"), std::string::npos) << refused.err;
  ASSERT_FALSE(fs::exists(db_));

  std::ofstream(dir_ / "poll.toml") << "[storage]\nidle_poll = 0.1\n";
  const mode_t old_umask = ::umask(007);  // the systemd unit's UMask; inherited by the child
  fs::create_directories(dir_ / "service");  // its stderr apart from the enqueue's below
  RingmailProcess service({"run", "--db", db_.string(), "--relay", (*sink)->address(),
                           "--config", (dir_ / "poll.toml").string(), "--shards", "1", "--quiet"},
                          dir_ / "service", {.signal_after = 20s});
  ::umask(old_umask);
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!fs::exists(db_) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(fs::exists(db_));
  std::this_thread::sleep_for(300ms);  // created and migrated
  // The -wal and -shm files too, while the service holds them open: an enqueue by another
  // member of the group writes all three.
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const fs::path file = db_.string() + suffix;
    EXPECT_EQ(fs::status(file).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                  fs::perms::group_write)
        << file;
  }
  ASSERT_EQ(run(enqueue_args(recipients(3))).exit_code, 0);
  while (count("delivered") < 3 && std::chrono::steady_clock::now() < until + 10s)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(count("delivered"), 3u);
  ASSERT_EQ(::kill(service.pid(), SIGTERM), 0);
  Result r = service.wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("created an empty queue database"), std::string::npos) << r.err;
}

// storage.retention: a service removes delivered recipients once they are older than it,
// and says so; a one-shot --until-done run with the same config never does.
TEST_F(StorageCommands, AServicePurgesFinalRecipientsOlderThanTheRetention) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  ASSERT_EQ(run(enqueue_args(recipients(3))).exit_code, 0);
  const fs::path config = dir_ / "retention.toml";
  std::ofstream(config) << "[storage]\nidle_poll = 0.1\nretention = \"1s\"\n"
                           "retention_check = 0.2\n";
  std::vector<std::string> once = {"run", "--db", db_.string(), "--relay", (*sink)->address(),
                                   "--config", config.string(), "--until-done", "--quiet"};
  ASSERT_EQ(run(once).exit_code, 0);
  ASSERT_EQ(count("delivered"), 3u);
  std::this_thread::sleep_for(1500ms);  // older than the retention now
  ASSERT_EQ(run(once).exit_code, 0);
  EXPECT_EQ(count("delivered"), 3u);
  // A newer receipt: the newest recipient is never purged (its id would be given again).
  ASSERT_EQ(run(enqueue_args(recipients(1))).exit_code, 0);

  fs::create_directories(dir_ / "service");
  RingmailProcess service({"run", "--db", db_.string(), "--relay", (*sink)->address(),
                           "--config", config.string(), "--shards", "1"},  // not --quiet: its start line is checked
                          dir_ / "service", {.signal_after = 20s});
  const auto until = std::chrono::steady_clock::now() + 10s;
  // Until the pass is over: its line comes after the step that drops the bodies.
  auto said = [&] {
    std::ifstream f(dir_ / "service" / "stderr");
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  while (said().find("retention: removed") == std::string::npos &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM recipients"), 1);
  EXPECT_EQ(sql_int(db_, "SELECT id FROM recipients"), 4);  // the receipt's
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM messages WHERE length(body) > 0"), 1);
  ASSERT_EQ(::kill(service.pid(), SIGTERM), 0);
  Result r = service.wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("retention: removed 3 recipients"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("are removed 1s after their last change"), std::string::npos) << r.err;
}

// logrotate: rename the outcome log, then SIGHUP. The service goes on (it used to die of
// the signal, 129, without a drain) and writes the rest to a new file of the old name.
TEST_F(StorageCommands, SighupReopensTheOutcomeLogAndTheServiceGoesOn) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  ASSERT_EQ(run(enqueue_args(recipients(3))).exit_code, 0);
  const fs::path log = dir_ / "outcomes.log";
  std::ofstream(dir_ / "poll.toml") << "[storage]\nidle_poll = 0.1\n";
  RingmailProcess service({"run", "--db", db_.string(), "--relay", (*sink)->address(),
                           "--config", (dir_ / "poll.toml").string(), "--shards", "1", "--quiet",
                           "--log-file", log.string()},
                          dir_, {.signal_after = 20s});
  auto wait_for = [&](uint64_t delivered) {
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (count("delivered") < delivered && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(20ms);
    return count("delivered") == delivered;
  };
  ASSERT_TRUE(wait_for(3));
  std::this_thread::sleep_for(200ms);  // the log thread writes every 50 ms
  fs::rename(log, dir_ / "outcomes.log.1");
  ASSERT_EQ(::kill(service.pid(), SIGHUP), 0);
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(service.running());
  std::ofstream(dir_ / "more.txt") << "later1@example.test\nlater2@example.test\n";
  ASSERT_EQ(run(enqueue_args(dir_ / "more.txt")).exit_code, 0);
  ASSERT_TRUE(wait_for(5));
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(::kill(service.pid(), SIGTERM), 0);
  Result r = service.wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto lines_of = [](const fs::path& p) {
    std::ifstream f(p);
    std::vector<std::string> out;
    for (std::string l; std::getline(f, l);)
      if (l.find("event=recipient_outcome") != std::string::npos) out.push_back(l);
    return out;
  };
  EXPECT_EQ(lines_of(dir_ / "outcomes.log.1").size(), 3u);
  auto after = lines_of(log);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_NE(after[0].find("rcpt=later"), std::string::npos) << after[0];
}

TEST_F(StorageCommands, AScheduledCampaignWaitsForItsTime) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto args = enqueue_args(recipients(10));
  args.insert(args.end(), {"--send-at", "2999-01-01T00:00:00Z"});
  ASSERT_EQ(run(args).exit_code, 0);
  auto bad = enqueue_args(recipients(10));
  bad.insert(bad.end(), {"--send-at", "tomorrow"});
  Result refused = run(bad);
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("RFC 3339"), std::string::npos) << refused.err;
  Result r = run(run_args((*sink)->address()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count("queued"), 10u);
  EXPECT_EQ((*sink)->messages_received(), 0u);
  // status says when the queue next has work; an unknown campaign is an error.
  EXPECT_EQ(status()["next_due_at"], "2999-01-01T00:00:00Z");
  Result text = run({"status", "--db", db_.string()});
  EXPECT_NE(text.out.find("next due: 2999-01-01T00:00:00Z"), std::string::npos) << text.out;
  Result unknown = run({"status", "--db", db_.string(), "--campaign", "no-such"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("no-such"), std::string::npos) << unknown.err;
}

TEST_F(StorageCommands, SoftRejectsAreRetriedAndABadMailboxIsBouncedAndSuppressed) {
  std::mutex mutex;
  std::map<std::string, int> seen;
  ScriptedSmtpServerOptions o;
  o.script = [&](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb != "RCPT") return std::nullopt;
    if (c.argument.find("<user1@") != std::string::npos) {
      std::lock_guard lock(mutex);
      if (++seen[c.argument] <= 2) return ScriptedReply::line("450 4.2.0 greylisted");
    }
    if (c.argument.find("<user2@") != std::string::npos)
      return ScriptedReply::line("550 5.1.1 no such user");
    return std::nullopt;
  };
  auto server = ScriptedSmtpServer::start(o);
  ASSERT_TRUE(server) << server.error();
  ASSERT_EQ(run(enqueue_args(recipients(5))).exit_code, 0);
  auto args = run_args((*server)->address());
  args.insert(args.end(), {"--config", config("[retry]\nfirst_delay = 0.05\njitter = 0\n").string()});
  // --until-done stops when the next retry is not due yet; a cron-like loop of runs
  // picks it up when it is.
  for (int i = 0; i < 20 && count("deferred") + count("queued") > 0; ++i) {
    std::this_thread::sleep_for(60ms);
    Result r = run(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_EQ(count("delivered"), 4u);
  EXPECT_EQ(count("bounced"), 1u);
  EXPECT_EQ(sql_int(db_, "SELECT attempts FROM recipients WHERE address = 'user1@example.test'"), 3);
  EXPECT_EQ(sql_int(db_, "SELECT attempts FROM recipients WHERE address = 'user2@example.test'"), 1);
  Result list = run({"suppress", "list", "--db", db_.string()});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_NE(list.out.find("user2@example.test\t550 5.1.1"), std::string::npos) << list.out;

  // The suppressed address is recorded as suppressed when enqueued again, never sent.
  ASSERT_EQ(run(enqueue_args(recipients(5))).exit_code, 0);
  EXPECT_EQ(count("suppressed"), 1u);
  ASSERT_EQ(run({"suppress", "add", "user4@EXAMPLE.test", "--db", db_.string()}).exit_code, 0);
  args.back() = config("[retry]\nfirst_delay = 0\n").string();
  Result second = run(args);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(count("suppressed"), 2u);  // user4 suppressed at run start
  EXPECT_EQ(count("delivered"), 4u + 3u);
  // user4 was offered to the server once (the first campaign), never after suppression.
  size_t user4_rcpts = 0;
  for (auto& t : (*server)->transcripts())
    for (auto& line : t.commands)
      if (line.starts_with("RCPT") && line.find("<user4@") != std::string::npos) ++user4_rcpts;
  EXPECT_EQ(user4_rcpts, 1u);
  ASSERT_EQ(run({"suppress", "remove", "user4@example.test", "--db", db_.string()}).exit_code, 0);
  EXPECT_EQ(run({"suppress", "list", "--db", db_.string()}).out.find("user4"), std::string::npos);
}

// A server refusing the whole session with a 5xx (here its greeting) defers the
// recipients: they are not at fault, and the failure policy must not bounce them on the
// code alone. A 5.1.1 to MAIL (the sender refused) bounces but suppresses no recipient.
TEST_F(StorageCommands, ASessionRefusedWith5xxDefersAndA511ToMailSuppressesNobody) {
  ScriptedSmtpServerOptions refusing;
  refusing.greeting = "554 5.3.2 not accepting mail";
  auto closed = ScriptedSmtpServer::start(refusing);
  ASSERT_TRUE(closed) << closed.error();
  ASSERT_EQ(run(enqueue_args(recipients(4))).exit_code, 0);
  Result r = run(run_args((*closed)->address()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count("deferred"), 4u);
  EXPECT_EQ(count("bounced"), 0u);

  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == "MAIL") return ScriptedReply::line("553 5.1.1 sender address rejected");
    return std::nullopt;
  };
  auto server = ScriptedSmtpServer::start(o);
  ASSERT_TRUE(server) << server.error();
  db_ = dir_ / "second.db";  // the first campaign waits for its backoff and the pause
  ASSERT_EQ(run(enqueue_args(recipients(4))).exit_code, 0);
  Result second = run(run_args((*server)->address()));
  EXPECT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(count("bounced"), 4u);
  Result list = run({"suppress", "list", "--db", db_.string()});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_EQ(list.out, "") << list.out;
}

// ≥100,000 recipients; `ringmail run` SIGKILLed at ≥10 random moments and restarted until
// done. Every recipient must end delivered, the server must have seen each at least
// once, and the duplicates may not exceed what was in flight (leased, outcome not
// committed) at the kills. How far a run gets before its kill depends on the machine
// (and the sanitizers): when a run finishes first, another batch is enqueued and the
// kills go on, so the test does not depend on speed.
TEST_F(StorageCommands, SurvivesSigkillAtRandomMoments) {
#ifdef RINGMAIL_SANITIZED
  constexpr int kMinKillMs = 100, kMaxKillMs = 400;  // the sanitized binary starts slower
#else
  constexpr int kMinKillMs = 20, kMaxKillMs = 150;
#endif
  constexpr size_t kFirstBatch = 100'000, kMoreBatch = 20'000;
  size_t recipients_total = kFirstBatch;
  SmtpSinkOptions sink_options;
  auto sink = SmtpSinkProcess::start(sink_options);
  ASSERT_TRUE(sink) << sink.error();
  ASSERT_EQ(run(enqueue_args(recipients(kFirstBatch))).exit_code, 0);
  auto args = run_args((*sink)->address());
  // A small window in flight (claims of 500, few transactions queued per shard), so a kill
  // can only cost a bounded number of duplicates.
  args.insert(args.end(), {"--rcpt-per-txn", "50", "--config",
                           config("[engine]\nshard_inbox_capacity = 16\n"
                                  "[storage]\nclaim_batch = 500\n")
                               .string()});
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_ms(kMinKillMs, kMaxKillMs);
  uint64_t in_flight_at_kills = 0;
  int kills = 0;
  for (int attempt = 0; kills < 12 && attempt < 60; ++attempt) {
    Result r =
        run(args, {.signal_after = std::chrono::milliseconds(delay_ms(rng)), .signal = SIGKILL});
    if (r.exit_code == 0) {
      // Finished before the kill: more work, so the next runs can still be killed.
      std::string batch = "more" + std::to_string(attempt) + ".txt";
      std::vector<std::string> more = enqueue_args(recipients(kMoreBatch, batch, recipients_total));
      more.insert(more.end(), {"--campaign", "more" + std::to_string(attempt)});
      ASSERT_EQ(run(more).exit_code, 0);
      recipients_total += kMoreBatch;
      continue;
    }
    ASSERT_EQ(r.exit_code, 128 + SIGKILL) << r.err;
    in_flight_at_kills += count("in_flight");
    ++kills;
  }
  EXPECT_GE(kills, 10) << "fewer than 10 runs could be killed";
  Result last = run(args);
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(count("delivered"), recipients_total);
  EXPECT_EQ(sql_text(db_, "PRAGMA integrity_check"), "ok");

  std::map<std::string, int> seen;
  for (const SinkTransaction& t : (*sink)->transactions())
    for (const std::string& rcpt : t.rcpt_to) ++seen[rcpt.substr(0, rcpt.find('>') + 1)];
  EXPECT_EQ(seen.size(), recipients_total);
  uint64_t duplicates = 0;
  for (auto& [a, n] : seen) duplicates += n - 1;
  std::cerr << "kills " << kills << ", duplicates " << duplicates << ", in flight at the kills "
            << in_flight_at_kills << "\n";
  EXPECT_LE(duplicates, in_flight_at_kills);
  EXPECT_GT(in_flight_at_kills, 0u) << "no kill hit a run with work in flight";
}

TEST_F(StorageCommands, AFullDiskIsAClearErrorAndLosesNothing) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  ASSERT_EQ(run(enqueue_args(recipients(2000))).exit_code, 0);
  // Checkpoint so the main file holds everything and the WAL starts empty.
  ASSERT_EQ(run({"status", "--db", db_.string()}).exit_code, 0);
  const rlim_t limit = fs::file_size(db_) + 64 * 1024;

  // A big enqueue cannot fit: exit 2, a clear message, the earlier campaign intact.
  Result full = run(enqueue_args(recipients(50'000, "big.txt")), {.file_size_limit = limit});
  EXPECT_EQ(full.exit_code, 2) << full.err;
  EXPECT_NE(full.err.find("full"), std::string::npos) << full.err;
  EXPECT_NE(full.err.find("nothing was enqueued"), std::string::npos) << full.err;
  EXPECT_EQ(sql_int(db_, "SELECT count(*) FROM recipients"), 2000);

  // A run that runs out of space stops with exit 3; the next one finishes the work. A
  // run's WAL grows by commits, not by recipients (a delivery of pending rows is a range,
  // storage/README.md), so the run gets more work and a WAL of 64 KiB at most: a dozen
  // commits' pages.
  ASSERT_EQ(run(enqueue_args(recipients(10'000, "more.txt", 2000))).exit_code, 0);
  const RingmailOptions tiny{.file_size_limit = 64 * 1024};
  auto args = run_args((*sink)->address());
  args.insert(args.end(), {"--rcpt-per-txn", "10"});
  Result stopped = run(args, tiny);
  EXPECT_EQ(stopped.exit_code, 3) << stopped.err;
  EXPECT_NE(stopped.err.find("database error"), std::string::npos) << stopped.err;
  Result done = run(args);
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_EQ(count("delivered"), 12'000u);
  EXPECT_EQ(sql_text(db_, "PRAGMA integrity_check"), "ok");
}

}  // namespace
}  // namespace ringmail::test

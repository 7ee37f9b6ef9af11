// `ringmail send` as a user runs it: the real binary against real servers on loopback,
// judged by its exit status, its JSON summary and what the server received.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "tests/app/queue_database.h"
#include "tests/app/ringmail_binary.h"
#include "tests/support/aiosmtpd_server.h"
#include "tests/support/scripted_smtp_server.h"
#include "tests/support/test_ca.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using Result = RingmailResult;

class SendCommand : public RingmailBinaryTest {
 protected:
  void SetUp() override {
    RingmailBinaryTest::SetUp();
    std::ofstream(dir_ / "m.eml") << "From: a@ringmail.test\nSubject: e2e\n\nhello\n.\nbye\n";
  }

  // The durable send (the default): through a database of this test's own.
  std::vector<std::string> send_args(const std::string& relay, const fs::path& rcpts) {
    auto args = memory_send_args(relay, rcpts);
    args.back() = "--db";
    args.push_back(db().string());
    return args;
  }
  // The send from memory (--no-db): nothing on disk.
  std::vector<std::string> memory_send_args(const std::string& relay, const fs::path& rcpts) {
    return {"send", "--relay", relay, "--from", "a@ringmail.test", "--message",
            (dir_ / "m.eml").string(), "--recipients", rcpts.string(), "--summary", "json",
            "--quiet", "--shards", "1", "--no-db"};
  }
  fs::path db() const { return dir_ / "send.db"; }
  // `ringmail status --json` of the test's database.
  nlohmann::json status() {
    Result r = run({"status", "--db", db().string(), "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }
};

TEST_F(SendCommand, DeliversACampaignAndReportsARefusedLine) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto rcpts = recipients(2000);
  std::ofstream(rcpts, std::ios::app) << "not an address\n";
  auto r = run(send_args((*sink)->address(), rcpts));
  EXPECT_EQ(r.exit_code, 1) << r.err;  // one line was refused
  auto summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["delivered"], 2000);
  EXPECT_EQ(summary["rejected"], 1);
  EXPECT_EQ(summary["deferred"], 0);
  EXPECT_EQ((*sink)->recipients_received(), 2000u);
  EXPECT_NE(r.err.find("r.txt:2001:"), std::string::npos) << r.err;
}

TEST_F(SendCommand, ExitsZeroWhenEveryRecipientIsDelivered) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto args = send_args((*sink)->address(), recipients(500));
  args.insert(args.end(), {"--rcpt-per-txn", "7"});
  auto r = run(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["delivered"], 500);
  EXPECT_EQ(summary["messages"], 72);  // ceil(500 / 7)
  EXPECT_EQ((*sink)->messages_received(), 72u);
}

TEST_F(SendCommand, BadInputExitsTwoAndSendsNothing) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto rcpts = recipients(10);
  EXPECT_EQ(run(send_args("127.0.0.1:notaport", rcpts)).exit_code, 2);
  EXPECT_EQ(run(send_args((*sink)->address(), dir_ / "missing.txt")).exit_code, 2);
  auto bad_from = send_args((*sink)->address(), rcpts);
  bad_from[4] = "not an address";
  EXPECT_EQ(run(bad_from).exit_code, 2);
  std::ofstream(dir_ / "bad.toml") << "[pool]\nmax_conections = 3\n";
  auto bad_config = send_args((*sink)->address(), rcpts);
  bad_config.insert(bad_config.end(), {"--config", (dir_ / "bad.toml").string()});
  Result r = run(bad_config);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad.toml:2"), std::string::npos) << r.err;
  EXPECT_EQ((*sink)->messages_received(), 0u);
}

// A server slow enough that a signal or a kill lands mid-campaign.
std::unique_ptr<ScriptedSmtpServer> slow_server() {
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, std::chrono::milliseconds(10)};
    return std::nullopt;
  };
  auto server = ScriptedSmtpServer::start(o);
  EXPECT_TRUE(server) << server.error();
  return server ? std::move(*server) : nullptr;
}

TEST_F(SendCommand, SigtermDrainsAndAccountsForEveryRecipientFromMemory) {
  auto server = slow_server();
  ASSERT_TRUE(server);
  auto args = memory_send_args(server->address(), recipients(5000));
  args.insert(args.end(), {"--connections", "2", "--rcpt-per-txn", "1", "--drain-timeout", "10"});
  auto started = std::chrono::steady_clock::now();
  Result r = run(args, {.signal_after = 700ms});
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(15));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["interrupted"], true);
  uint64_t delivered = summary["delivered"], not_attempted = summary["not_attempted"];
  EXPECT_GT(delivered, 0u);
  EXPECT_GT(not_attempted, 0u);
  EXPECT_EQ(summary["deferred"], 0);  // in-flight work finished rather than being cut off
  EXPECT_EQ(delivered + not_attempted, 5000u);
  EXPECT_EQ(server->messages().size(), delivered);
}

TEST_F(SendCommand, SigtermLeavesTheRestQueuedForRun) {
  auto server = slow_server();
  ASSERT_TRUE(server);
  auto args = send_args(server->address(), recipients(5000));
  args.insert(args.end(), {"--connections", "2", "--rcpt-per-txn", "1", "--drain-timeout", "10"});
  Result r = run(args, {.signal_after = 700ms});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["interrupted"], true);
  const uint64_t delivered = summary["delivered"];
  EXPECT_GT(delivered, 0u);
  EXPECT_EQ(summary["deferred"], 0);  // in-flight work finished rather than being cut off
  EXPECT_EQ(server->messages().size(), delivered);
  // Every recipient is in the database: the delivered ones as such, the rest queued.
  auto before = status()["campaigns"]["send"];
  EXPECT_EQ(before["total"], 5000);
  EXPECT_EQ(before["delivered"], delivered);
  EXPECT_EQ(before["queued"], 5000 - delivered);

  Result rest = run({"run", "--db", db().string(), "--until-done", "--relay", server->address(),
                     "--quiet", "--no-metrics", "--shards", "1", "--rcpt-per-txn", "100"});
  EXPECT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_EQ(status()["campaigns"]["send"]["delivered"], 5000);
  EXPECT_EQ(server->messages().size(), delivered + (5000 - delivered + 99) / 100);
}

TEST_F(SendCommand, KillNineLosesNoRecipient) {
  auto server = slow_server();
  ASSERT_TRUE(server);
  auto args = send_args(server->address(), recipients(3000));
  args.insert(args.end(), {"--connections", "2", "--rcpt-per-txn", "1"});
  Result r = run(args, {.signal_after = 700ms, .signal = SIGKILL});
  EXPECT_EQ(r.exit_code, 128 + SIGKILL);
  Result rest = run({"run", "--db", db().string(), "--until-done", "--relay", server->address(),
                     "--quiet", "--no-metrics", "--shards", "1"});
  EXPECT_EQ(rest.exit_code, 0) << rest.err;
  auto after = status()["campaigns"]["send"];
  EXPECT_EQ(after["total"], 3000);
  EXPECT_EQ(after["delivered"], 3000);
  // Every address reached the server with a whole message; the only ones that did twice
  // were in flight at the kill (two connections, one recipient per transaction).
  std::set<std::string> seen;
  size_t total = 0;
  for (const auto& t : server->transcripts()) {
    std::vector<std::string> rcpts;
    for (const std::string& line : t.commands) {
      if (line.starts_with("MAIL")) rcpts.clear();
      if (line.starts_with("RCPT")) rcpts.push_back(line);
      if (line == ".") {
        for (auto& r : rcpts) seen.insert(r);
        total += rcpts.size();
        rcpts.clear();
      }
    }
  }
  EXPECT_EQ(seen.size(), 3000u);
  EXPECT_LE(total - seen.size(), 10u) << "duplicates";
}

TEST_F(SendCommand, ASignalWhileEnqueueingLeavesNothingEnqueued) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  // Big enough that reading it takes longer than the signal's delay on any machine.
  Result r = run(send_args((*sink)->address(), recipients(600000)),
                 {.signal_after = 150ms, .signal = SIGINT});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("nothing was enqueued"), std::string::npos) << r.err;
  EXPECT_EQ(status()["campaigns"].size(), 0u);
  EXPECT_EQ((*sink)->recipients_received(), 0u);
}

TEST_F(SendCommand, AStartUpErrorComesBeforeTheEnqueue) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  // A metrics address that is taken: exit 2, and no database to send later.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  auto args = send_args((*sink)->address(), recipients(10));
  args.insert(args.end(), {"--metrics-listen", "127.0.0.1:" + std::to_string(ntohs(a.sin_port))});
  Result r = run(args);
  close(fd);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_FALSE(fs::exists(db()));
  EXPECT_EQ((*sink)->recipients_received(), 0u);
}

TEST_F(SendCommand, ASendDeliversOnlyItsOwnRecipientsAndLogsTheirStates) {
  // The first send's relay refuses connections: its recipients are deferred, and the
  // outcome log says until when.
  const std::string refused = "127.0.0.1:" + std::to_string(unused_loopback_port());
  // Short backoff and pause, so the first send's recipients are due again soon.
  std::ofstream(dir_ / "short.toml") << "[retry]\nfirst_delay = 0.3\n[pool]\n"
                                         "dead_destination_pause = 0.3\n";
  auto first = send_args(refused, recipients(30));
  first.insert(first.end(), {"--campaign", "first", "--log-file", (dir_ / "first.log").string(),
                             "--log-format", "json", "--config", (dir_ / "short.toml").string()});
  Result r1 = run(first);
  EXPECT_EQ(r1.exit_code, 1) << r1.err;
  EXPECT_EQ(status()["campaigns"]["first"]["deferred"], 30);
  std::ifstream log(dir_ / "first.log");
  size_t state_lines = 0;
  std::set<std::string> attempted;  // recipients whose recipient_outcome line came
  for (std::string line; std::getline(log, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "recipient_outcome") attempted.insert(j["rcpt"].get<std::string>());
    if (j["event"] != "recipient_state") continue;
    ++state_lines;
    // The attempt first, then the state it led to.
    EXPECT_TRUE(attempted.contains(j["rcpt"].get<std::string>())) << line;
    EXPECT_EQ(j["state"], "deferred") << line;
    EXPECT_EQ(j["attempts"], 1) << line;
    EXPECT_TRUE(j.contains("next_attempt")) << line;
  }
  EXPECT_EQ(state_lines, 30u);

  // Due again, those recipients still belong to the first send: a second send through
  // another relay delivers its own 5 and leaves them alone.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  std::ofstream(dir_ / "second.txt") << "a@second.test\nb@second.test\nc@second.test\n"
                                        "d@second.test\ne@second.test\n";
  auto second = send_args((*sink)->address(), dir_ / "second.txt");
  second.insert(second.end(), {"--campaign", "second"});
  Result r2 = run(second);
  EXPECT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ((*sink)->recipients_received(), 5u);
  auto after = status()["campaigns"];
  EXPECT_EQ(after["second"]["delivered"], 5);
  EXPECT_EQ(after["first"]["deferred"], 30);
  EXPECT_EQ(nlohmann::json::parse(r2.out)["states"]["delivered"], 5);  // this send's only
}

TEST_F(SendCommand, ASlowDestinationIsParkedInTheDatabaseAndStillDelivered) {
  // One domain's server takes 30 ms a message over 2 connections, the other is smtp-sink.
  // The slow one's backlog is parked in the database (queued, no attempt counted) rather
  // than filling the engine, and the send still ends with everything delivered once.
  ScriptedSmtpServerOptions so;
  so.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, 30ms};
    return std::nullopt;
  };
  auto slow = ScriptedSmtpServer::start(so);
  ASSERT_TRUE(slow) << slow.error();
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  std::ofstream(dir_ / "routes.toml")
      << "[engine]\nshard_inbox_capacity = 64\n[pool]\nmax_backlog = 0.2\n"
      << "max_recipients_per_transaction = 1\nmax_connections = 2\n[routes]\n"
      << "\"slow.test\" = \"127.0.0.1:" << (*slow)->port() << "\"\n"
      << "\"fast.test\" = \"" << (*sink)->address() << "\"\n";
  {
    std::ofstream rcpts(dir_ / "mixed.txt");
    for (int i = 0; i < 1000; ++i) {
      if (i < 100) rcpts << "s" << i << "@slow.test\n";
      rcpts << "f" << i << "@fast.test\n";
    }
  }
  Result r = run({"send", "--from", "a@ringmail.test", "--message", (dir_ / "m.eml").string(),
                  "--recipients", (dir_ / "mixed.txt").string(), "--summary", "json", "--quiet",
                  "--shards", "1", "--config", (dir_ / "routes.toml").string(), "--db",
                  db().string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto summary = nlohmann::json::parse(r.out);
  EXPECT_GT(summary["parked"].get<int>(), 0) << r.out;
  EXPECT_EQ(summary["states"]["delivered"], 1100) << r.out;
  EXPECT_EQ((*sink)->recipients_received(), 1000u);
  // Each slow recipient reached its server once: parking is not an attempt.
  std::multiset<std::string> slow_rcpts;
  for (const auto& t : (*slow)->transcripts())
    for (const auto& line : t.commands)
      if (line.starts_with("RCPT TO:")) slow_rcpts.insert(line);
  EXPECT_EQ(slow_rcpts.size(), 100u);
  EXPECT_EQ((*slow)->messages().size(), 100u);
  EXPECT_EQ(std::set<std::string>(slow_rcpts.begin(), slow_rcpts.end()).size(), 100u);
  EXPECT_EQ(sql_int(db(), "SELECT count(*) FROM recipients WHERE attempts <> 1"), 0);
}

TEST_F(SendCommand, DefaultDatabaseIsInTheWorkingDirectory) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto args = send_args((*sink)->address(), recipients(10));
  args.resize(args.size() - 2);  // no --db
  Result r = run(args, {.cwd = dir_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "ringmail.db"));
  Result memory = run(memory_send_args((*sink)->address(), dir_ / "r.txt"), {.cwd = dir_ / "sub"});
  EXPECT_EQ(memory.exit_code, 0) << memory.err;
  EXPECT_FALSE(fs::exists(dir_ / "sub" / "ringmail.db"));
  EXPECT_EQ((*sink)->recipients_received(), 20u);
}

// A submission server: STARTTLS with `ca`'s certificate for mx.ringmail.test, AUTH for
// user "shop" with `password`.
AiosmtpdOptions submission_server(const TestCa& ca, std::string password) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kStartTls;
  o.cert_file = ca.server_cert();
  o.key_file = ca.server().key_pem;
  o.auth_user = "shop";
  o.auth_password = std::move(password);
  return o;
}

TEST_F(SendCommand, SubmissionWithStarttlsAndAuthFromAnEnvironmentVariable) {
  auto ca = TestCa::create(dir_, "mx.ringmail.test");
  ASSERT_TRUE(ca) << ca.error();
  AiosmtpdOptions o = submission_server(*ca, "env-Pa55word");
  o.auth_required = true;
  auto server = AiosmtpdServer::start(o);
  ASSERT_TRUE(server) << server.error();
  std::ofstream(dir_ / "tls.toml") << "[tls]\nserver_name = \"mx.ringmail.test\"\n";
  setenv("RINGMAIL_E2E_PASSWORD", "env-Pa55word", 1);
  auto args = send_args((*server)->address(), recipients(20));
  args.insert(args.end(), {"--tls", "verify", "--tls-ca-file", ca->ca_pem().string(), "--config",
                           (dir_ / "tls.toml").string(), "--auth-user", "shop",
                           "--auth-password-env", "RINGMAIL_E2E_PASSWORD"});
  Result r = run(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["delivered"], 20);
  ASSERT_EQ((*server)->message_count(), 1u);  // 20 recipients, one transaction
  EXPECT_TRUE((*server)->messages().front().tls);
  EXPECT_EQ((*server)->messages().front().auth_user, "shop");
  EXPECT_EQ(r.err.find("env-Pa55word"), std::string::npos);  // never printed

  unsetenv("RINGMAIL_E2E_PASSWORD");
  Result missing = run(args);
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("RINGMAIL_E2E_PASSWORD"), std::string::npos) << missing.err;
}

// The main relay's [auth] is its own: a route to another server, given as a plain
// "host:port" or as a table with a TLS policy of its own, is never offered the password.
TEST_F(SendCommand, TheRelaysCredentialsAreNeverOfferedToARoute) {
  auto ca = TestCa::create(dir_, "mx.ringmail.test");
  ASSERT_TRUE(ca) << ca.error();
  const AiosmtpdOptions o = submission_server(*ca, "route-Pa55word");
  auto relay = AiosmtpdServer::start(o);
  ASSERT_TRUE(relay) << relay.error();
  auto other = AiosmtpdServer::start(o);  // offers AUTH too, and would accept it
  ASSERT_TRUE(other) << other.error();
  std::ofstream(dir_ / "routes.toml")
      << "[tls]\nserver_name = \"mx.ringmail.test\"\n[routes]\n"
      << "\"plain.test\" = \"" << (*other)->address() << "\"\n"
      << "\"table.test\" = { relay = \"" << (*other)->address() << "\", tls = \"required\" }\n";
  std::ofstream(dir_ / "mixed.txt") << "a@example.test\nb@plain.test\nc@table.test\n";
  setenv("RINGMAIL_E2E_PASSWORD", "route-Pa55word", 1);
  Result r = run({"send", "--relay", (*relay)->address(), "--from", "a@ringmail.test",
                  "--message", (dir_ / "m.eml").string(), "--recipients",
                  (dir_ / "mixed.txt").string(), "--summary", "json", "--quiet", "--no-db",
                  "--tls", "verify", "--tls-ca-file", ca->ca_pem().string(), "--config",
                  (dir_ / "routes.toml").string(), "--auth-user", "shop",
                  "--auth-password-env", "RINGMAIL_E2E_PASSWORD"});
  unsetenv("RINGMAIL_E2E_PASSWORD");
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["delivered"], 3) << r.out;
  ASSERT_EQ((*relay)->message_count(), 1u);
  EXPECT_EQ((*relay)->messages().front().auth_user, "shop");
  EXPECT_EQ((*other)->message_count(), 2u);
  EXPECT_TRUE((*other)->auth_attempts().empty());
  for (const auto& m : (*other)->messages()) EXPECT_EQ(m.auth_user, "");
}

}  // namespace
}  // namespace ringmail::test

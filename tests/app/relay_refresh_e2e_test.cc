// A relay given by name that moves while `ringmail run` serves: the real binary, two
// smtp-sinks on one port at 127.0.0.1 and 127.0.0.2, and the name in /etc/hosts. The test
// process enters a mount namespace of its own (root only, else skipped) and binds files
// over /etc/hosts there, so the machine's own file is never touched.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "tests/app/ringmail_binary.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kRelayName = "relay.ringmail.test";

std::string file_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Polls `done` up to `timeout`; a bound against a hang, not a speed assertion.
bool eventually(const std::function<bool()>& done, std::chrono::seconds timeout = 30s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

class RelayRefresh : public RingmailBinaryTest {
 protected:
  void TearDown() override {
    // Our namespace only; each bind is undone so the directory below can go.
    for (; hosts_mounts_ > 0; --hosts_mounts_) umount2("/etc/hosts", MNT_DETACH);
    unsetenv("RINGMAIL_RELAY_REFRESH_MS");
    RingmailBinaryTest::TearDown();
  }

  // Enters a private mount namespace: what is mounted here is seen by this process and
  // its children only. An empty string when it worked, else why not.
  std::string enter_private_mount_namespace() {
    if (geteuid() != 0) return "needs root";
    if (unshare(CLONE_NEWNS) != 0) return std::string("unshare(CLONE_NEWNS): ") + strerror(errno);
    // Without this, a bind under a shared mount would propagate back to the host.
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      return std::string("mount --make-rprivate /: ") + strerror(errno);
    return "";
  }

  // /etc/hosts from now on says `lines`. A bind of a fresh file (rather than a rewrite in
  // place) so a lookup never reads a half-written file.
  std::string hosts(const std::string& lines) {
    fs::path file = dir_ / ("hosts." + std::to_string(hosts_mounts_));
    std::ofstream(file) << "127.0.0.1 localhost\n::1 localhost\n" << lines;
    if (mount(file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0)
      return std::string("mount --bind over /etc/hosts: ") + strerror(errno);
    ++hosts_mounts_;
    return "";
  }

  std::vector<std::string> enqueue_args(const std::string& recipient) {
    fs::path list = dir_ / (recipient + ".txt");
    std::ofstream(list) << recipient << "\n";
    return {"enqueue", "--db", (dir_ / "q.db").string(), "--from", "a@ringmail.test",
            "--message", (dir_ / "m.eml").string(), "--recipients", list.string(), "--quiet"};
  }

  // Sinks A (127.0.0.1) and B (127.0.0.2) on one port: the relay is HOST:PORT, and only
  // the host's address moves.
  void start_sinks() {
    for (int attempt = 0; attempt < 3 && !b_; ++attempt) {
      auto first = SmtpSinkProcess::start();
      ASSERT_TRUE(first) << first.error();
      SmtpSinkOptions second_options;
      second_options.host = "127.0.0.2";
      second_options.port = (*first)->port();
      auto second = SmtpSinkProcess::start(second_options);
      if (!second) continue;  // that port is taken on 127.0.0.2: another pair
      a_ = std::move(*first);
      b_ = std::move(*second);
    }
    ASSERT_TRUE(b_) << "no port free on both 127.0.0.1 and 127.0.0.2";
    std::ofstream(dir_ / "m.eml") << "From: a@ringmail.test\nSubject: move\n\nhello\n";
    std::ofstream(dir_ / "c.toml") << "[storage]\nidle_poll = 0.1\n";
  }

  // `ringmail run` as a service, relaying through kRelayName.
  std::unique_ptr<RingmailProcess> start_service() {
    fs::create_directories(dir_ / "service");
    setenv("RINGMAIL_RELAY_REFRESH_MS", "100", 1);  // the test hook: a minute is too long
    auto service = std::make_unique<RingmailProcess>(
        std::vector<std::string>{"run", "--db", (dir_ / "q.db").string(), "--config",
                                 (dir_ / "c.toml").string(), "--relay",
                                 std::string(kRelayName) + ":" + std::to_string(a_->port()),
                                 "--shards", "1", "--quiet", "--no-metrics"},
        dir_ / "service");
    unsetenv("RINGMAIL_RELAY_REFRESH_MS");
    return service;
  }
  std::string said() { return file_text(dir_ / "service" / "stderr"); }

  int hosts_mounts_ = 0;
  std::unique_ptr<SmtpSinkProcess> a_, b_;
};

// The name maps to sink A, then to sink B, then to nothing: mail enqueued after the move
// reaches B, and a failed lookup keeps B (said once). Each phase mails another domain; the
// next test has them all in one.
TEST_F(RelayRefresh, MailEnqueuedAfterTheRelayMovesReachesTheNewAddress) {
  if (std::string why = enter_private_mount_namespace(); !why.empty()) GTEST_SKIP() << why;
  if (std::string why = hosts(std::string("127.0.0.1 ") + kRelayName + "\n"); !why.empty())
    GTEST_SKIP() << why;

  ASSERT_NO_FATAL_FAILURE(start_sinks());
  SmtpSinkProcess* a = a_.get();
  SmtpSinkProcess* b = b_.get();
  ASSERT_EQ(run(enqueue_args("one@before.test")).exit_code, 0);
  auto service = start_service();

  ASSERT_TRUE(eventually([&] { return a->recipients_received() == 1; })) << said();

  ASSERT_EQ(hosts(std::string("127.0.0.2 ") + kRelayName + "\n"), "");
  ASSERT_TRUE(eventually([&] {
    return said().find("address changed from 127.0.0.1 to 127.0.0.2") != std::string::npos;
  })) << said();
  ASSERT_EQ(run(enqueue_args("two@after.test")).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return b->recipients_received() == 1; })) << said();

  ASSERT_EQ(hosts(""), "");  // the name is gone: the last good address stays
  ASSERT_TRUE(eventually([&] { return said().find("lookup failed (") != std::string::npos; }))
      << said();
  ASSERT_EQ(run(enqueue_args("three@third.test")).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return b->recipients_received() == 2; })) << said();

  kill(service->pid(), SIGTERM);
  RingmailResult r = service->wait(60s);
  EXPECT_EQ(r.exit_code, 0) << r.err;  // the refresher's thread never takes the SIGTERM
  EXPECT_EQ(a->recipients_received(), 1u);
  EXPECT_EQ(count_of(r.err, "lookup failed ("), 1u) << r.err;  // said once, not per lookup
  // The reason is getaddrinfo's (not found, or DNS unreachable: machines differ).
  const size_t line =
      r.err.find(std::string("ringmail: relay ") + kRelayName + ": lookup failed (");
  ASSERT_NE(line, std::string::npos) << r.err;
  EXPECT_NE(r.err.substr(line, r.err.find('\n', line) - line).find("); still using 127.0.0.2"),
            std::string::npos)
      << r.err;
  const auto b_got = b->transactions();
  ASSERT_EQ(b_got.size(), 2u);
  EXPECT_EQ(b_got[0].rcpt_to, (std::vector<std::string>{"<two@after.test>"}));
  EXPECT_EQ(b_got[1].rcpt_to, (std::vector<std::string>{"<three@third.test>"}));
}

// The same move with every recipient in one domain: the engine's feeder reuses the route of
// a run of recipients in one domain for a second at most (engine.cc, kRouteReuse), so a
// service mailing one domain follows what the refresher publishes too.
TEST_F(RelayRefresh, MailToTheSameDomainAfterTheMoveReachesTheNewAddress) {
  if (std::string why = enter_private_mount_namespace(); !why.empty()) GTEST_SKIP() << why;
  if (std::string why = hosts(std::string("127.0.0.1 ") + kRelayName + "\n"); !why.empty())
    GTEST_SKIP() << why;
  ASSERT_NO_FATAL_FAILURE(start_sinks());
  ASSERT_EQ(run(enqueue_args("one@same.test")).exit_code, 0);
  auto service = start_service();
  ASSERT_TRUE(eventually([&] { return a_->recipients_received() == 1; })) << said();
  ASSERT_EQ(hosts(std::string("127.0.0.2 ") + kRelayName + "\n"), "");
  ASSERT_TRUE(eventually([&] {
    return said().find("address changed from 127.0.0.1 to 127.0.0.2") != std::string::npos;
  })) << said();
  ASSERT_EQ(run(enqueue_args("two@same.test")).exit_code, 0);
  EXPECT_TRUE(eventually([&] { return b_->recipients_received() == 1; })) << said();
  kill(service->pid(), SIGTERM);
  EXPECT_EQ(service->wait(60s).exit_code, 0);
  EXPECT_EQ(a_->recipients_received(), 1u);
}

}  // namespace
}  // namespace ringmail::test

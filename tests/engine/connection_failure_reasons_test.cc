// Failed connections counted by reason, against real peers on loopback: a closed port,
// a scripted server that refuses, closes, stalls or talks garbage, and smtp-sink (no
// failures at all). Each failure is also counted for its site (the relay's address).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/engine/engine_harness.h"
#include "tests/support/scripted_smtp_server.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

using engine::ConnectionFailure;

// A loopback port nothing listens on: bound, then closed.
uint16_t closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    ADD_FAILURE() << "bind";
  ::close(fd);
  return ntohs(a.sin_port);
}

// Every failure of the run is under `reason`, there is at least one, and the relay's site
// has them all.
void expect_only(const EngineRun& run, ConnectionFailure reason) {
  const auto& d = run.counts;
  EXPECT_GE(d.connection_failures, 1u);
  uint64_t sum = 0;
  for (size_t i = 0; i < engine::kConnectionFailureReasons; ++i) {
    sum += d.connection_failures_by_reason[i];
    if (i != size_t(reason)) {
      EXPECT_EQ(d.connection_failures_by_reason[i], 0u) << engine::to_string(ConnectionFailure(i));
    }
  }
  EXPECT_EQ(sum, d.connection_failures);
  EXPECT_EQ(d.connection_failures_by_reason[size_t(reason)], d.connection_failures)
      << engine::to_string(reason);
  ASSERT_EQ(d.sites.size(), 1u);
  EXPECT_EQ(d.sites[0].name, "127.0.0.1");
  EXPECT_EQ(d.sites[0].counts.connection_failures, d.connection_failures);
  EXPECT_EQ(d.sites[0].counts.recipients[1], d.recipients_deferred);
}

std::unique_ptr<ScriptedSmtpServer> start_server(ScriptedSmtpServerOptions options) {
  auto server = ScriptedSmtpServer::start(std::move(options));
  if (!server) ADD_FAILURE() << server.error();
  return server ? std::move(*server) : nullptr;
}

EngineRun run_against(ScriptedSmtpServer& server, engine::EngineOptions options = test_options()) {
  return run_engine(std::move(options), "127.0.0.1", server.port(), make_items(2),
                    std::chrono::seconds(30));
}

TEST(ConnectionFailureReasons, SmtpSinkHasNone) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto run = run_engine(test_options(), "127.0.0.1", (*sink)->port(), make_items(20));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 20u);
  EXPECT_EQ(run.counts.connection_failures, 0u);
  ASSERT_EQ(run.counts.sites.size(), 1u);
  EXPECT_EQ(run.counts.sites[0].counts.recipients[0], 20u);
  EXPECT_EQ(run.counts.site_other.recipients_total(), 0u);
}

TEST(ConnectionFailureReasons, ClosedPortIsRefused) {
  auto run = run_engine(test_options(), "127.0.0.1", closed_port(), make_items(2),
                        std::chrono::seconds(30));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_deferred, 2u);
  expect_only(run, ConnectionFailure::kRefused);
}

TEST(ConnectionFailureReasons, RefusedGreeting) {
  ScriptedSmtpServerOptions o;
  o.greeting = "554 5.3.2 no service here";
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto run = run_against(*server);
  ASSERT_TRUE(run.finished);
  expect_only(run, ConnectionFailure::kGreeting);
}

TEST(ConnectionFailureReasons, GarbageGreetingIsAProtocolError) {
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == "CONNECT") return ScriptedReply{.text = "HTTP/1.1 400 Bad Request\r\n"};
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto run = run_against(*server);
  ASSERT_TRUE(run.finished);
  expect_only(run, ConnectionFailure::kProtocol);
}

TEST(ConnectionFailureReasons, PeerClosingBeforeTheGreeting) {
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == "CONNECT") return ScriptedReply{.text = "", .close = true};
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto run = run_against(*server);
  ASSERT_TRUE(run.finished);
  expect_only(run, ConnectionFailure::kClosed);
}

TEST(ConnectionFailureReasons, SilentServerTimesOut) {
  ScriptedSmtpServerOptions o;
  o.never_answer = true;
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto options = test_options();
  options.timeouts.greeting = engine::Seconds(0.3);
  auto run = run_against(*server, options);
  ASSERT_TRUE(run.finished);
  expect_only(run, ConnectionFailure::kTimeout);
}

TEST(ConnectionFailureReasons, RequiredTlsNotOffered) {
  auto server = start_server({});  // no STARTTLS in its EHLO reply
  ASSERT_TRUE(server);
  auto options = test_options();
  options.security.tls.mode = engine::TlsPolicy::kRequired;
  auto run = run_against(*server, options);
  ASSERT_TRUE(run.finished);
  expect_only(run, ConnectionFailure::kTls);
}

}  // namespace
}  // namespace ringmail::test

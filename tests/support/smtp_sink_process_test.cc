// Pins what SmtpSinkProcess promises and how smtp-sink's fault options answer, so engine
// tests can rely on both.
#include "tests/support/smtp_sink_process.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "tests/support/blocking_smtp_client.h"

namespace ringmail::test {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<SmtpSinkProcess> start_sink(SmtpSinkOptions options = {}) {
  auto sink = SmtpSinkProcess::start(std::move(options));
  EXPECT_TRUE(sink.has_value()) << sink.error();
  return sink ? std::move(*sink) : nullptr;
}

std::optional<BlockingSmtpClient> connect_and_greet(const SmtpSinkProcess& sink,
                                                    int expected_greeting = 220) {
  auto client = BlockingSmtpClient::connect(sink.port());
  EXPECT_TRUE(client.has_value()) << client.error();
  if (!client) return std::nullopt;
  EXPECT_EQ(BlockingSmtpClient::code(client->read_reply()), expected_greeting);
  return std::move(*client);
}

// MAIL, RCPT each, DATA, content, "."; returns the reply code of the ".".
int send_transaction(BlockingSmtpClient& client, const std::string& from,
                     const std::vector<std::string>& rcpts, const std::string& content) {
  EXPECT_EQ(BlockingSmtpClient::code(client.command("MAIL FROM:<" + from + ">")), 250);
  for (const std::string& rcpt : rcpts)
    EXPECT_EQ(BlockingSmtpClient::code(client.command("RCPT TO:<" + rcpt + ">")), 250);
  EXPECT_EQ(BlockingSmtpClient::code(client.command("DATA")), 354);
  EXPECT_TRUE(client.send(content));
  return BlockingSmtpClient::code(client.command("."));
}

TEST(SmtpSinkProcess, CountsMessagesRecipientsAndKeepsEnvelopes) {
  auto sink = start_sink();
  ASSERT_TRUE(sink);
  EXPECT_EQ(sink->messages_received(), 0u);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  auto ehlo = client->command("EHLO client.test");
  EXPECT_EQ(BlockingSmtpClient::code(ehlo), 250);
  EXPECT_NE(ehlo->find("PIPELINING"), std::string::npos);

  EXPECT_EQ(send_transaction(*client, "a@b.test", {"c@d.test", "e@f.test"},
                             "Subject: one\r\n\r\n..dot-stuffed\r\nX-Rcpt-Args: <fake@x>\r\n"),
            250);
  EXPECT_EQ(send_transaction(*client, "a@b.test", {"g@h.test"}, "Subject: two\r\n\r\nbody\r\n"),
            250);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("QUIT")), 221);

  EXPECT_EQ(sink->messages_received(), 2u);
  EXPECT_EQ(sink->recipients_received(), 3u);  // the body's fake header is not counted
  auto transactions = sink->transactions();
  ASSERT_EQ(transactions.size(), 2u);
  EXPECT_EQ(transactions[0].helo, "client.test");
  EXPECT_EQ(transactions[0].mail_from, "<a@b.test>");
  EXPECT_EQ(transactions[0].rcpt_to, (std::vector<std::string>{"<c@d.test>", "<e@f.test>"}));
  EXPECT_EQ(transactions[0].content, "Subject: one\n\n.dot-stuffed\nX-Rcpt-Args: <fake@x>\n");
  EXPECT_EQ(transactions[1].rcpt_to, (std::vector<std::string>{"<g@h.test>"}));
  EXPECT_EQ(transactions[1].content, "Subject: two\n\nbody\n");
}

TEST(SmtpSinkProcess, CountIsExactAsSoonAsTheDotIsAnswered) {
  auto sink = start_sink();
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  for (uint64_t i = 1; i <= 20; ++i) {
    ASSERT_EQ(send_transaction(*client, "a@b", {"c@d"}, "x\r\n"), 250);
    ASSERT_EQ(sink->messages_received(), i);
    ASSERT_EQ(sink->recipients_received(), i);
  }
}

TEST(SmtpSinkProcess, AnswersPipelinedCommands) {
  auto sink = start_sink();
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  ASSERT_TRUE(client->send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n"));
  for (int expected : {250, 250, 250, 354})
    EXPECT_EQ(BlockingSmtpClient::code(client->read_reply()), expected);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("body\r\n.")), 250);
  EXPECT_EQ(sink->recipients_received(), 2u);
}

TEST(SmtpSinkProcess, CountersModeCountsMessages) {
  auto sink = start_sink({.capture = SinkCapture::kCounters});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(send_transaction(*client, "a@b", {"c@d", "e@f"}, "x\r\n"), 250);
  EXPECT_EQ(sink->messages_received(), 3u);
}

TEST(SmtpSinkProcess, PipeliningCanBeHidden) {
  auto sink = start_sink({.extra_args = {"-p"}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  auto ehlo = client->command("EHLO x");
  EXPECT_EQ(BlockingSmtpClient::code(ehlo), 250);
  EXPECT_EQ(ehlo->find("PIPELINING"), std::string::npos);
}

TEST(SmtpSinkProcess, HardRejectOfRcptImpliesNoPipelining) {
  auto sink = start_sink({.extra_args = {"-f", "RCPT"}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  auto ehlo = client->command("EHLO x");
  EXPECT_EQ(ehlo->find("PIPELINING"), std::string::npos);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("MAIL FROM:<a@b>")), 250);
  auto rcpt = client->command("RCPT TO:<c@d>");
  EXPECT_EQ(*rcpt, "500 5.3.0 Error: command failed\r\n");
  EXPECT_EQ(BlockingSmtpClient::code(client->command("DATA")), 503);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("QUIT")), 221);
  EXPECT_EQ(sink->messages_received(), 0u);
  EXPECT_EQ(sink->recipients_received(), 0u);
}

TEST(SmtpSinkProcess, SoftRejectOfRcpt) {
  auto sink = start_sink({.extra_args = {"-r", "RCPT"}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("MAIL FROM:<a@b>")), 250);
  EXPECT_EQ(*client->command("RCPT TO:<c@d>"), "450 4.3.0 Error: command failed\r\n");
}

TEST(SmtpSinkProcess, DisconnectWithoutReply) {
  auto sink = start_sink({.extra_args = {"-q", "RCPT"}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("MAIL FROM:<a@b>")), 250);
  auto rcpt = client->command("RCPT TO:<c@d>");
  ASSERT_FALSE(rcpt.has_value());
  EXPECT_EQ(rcpt.error(), "connection closed");
}

TEST(SmtpSinkProcess, Reply421AndDisconnect) {
  auto sink = start_sink({.extra_args = {"-Q", "MAIL"}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  EXPECT_EQ(*client->command("MAIL FROM:<a@b>"), "421 4.0.0 Server closing connection\r\n");
  EXPECT_TRUE(client->wait_for_close());
}

TEST(SmtpSinkProcess, RejectedGreeting) {
  auto sink = start_sink({.extra_args = {"-Q", "CONNECT"}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink, 421);
  ASSERT_TRUE(client);
  EXPECT_TRUE(client->wait_for_close());
}

TEST(SmtpSinkProcess, AbortAfterDataIsNotCounted) {
  auto sink = start_sink({.extra_args = {"-A", "0"}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("MAIL FROM:<a@b>")), 250);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("RCPT TO:<c@d>")), 250);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("DATA")), 354);
  EXPECT_EQ(*client->read_reply(), "550 This violates SMTP\r\n");
  EXPECT_TRUE(client->wait_for_close());
  EXPECT_EQ(sink->messages_received(), 0u);
}

TEST(SmtpSinkProcess, RejectedDotIsStillDumped) {
  auto sink = start_sink({.extra_args = {"-f", "."}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  EXPECT_EQ(send_transaction(*client, "a@b", {"c@d"}, "x\r\n"), 500);
  // smtp-sink writes the record before it decides the reply: the count says "received".
  EXPECT_EQ(sink->messages_received(), 1u);
}

TEST(SmtpSinkProcess, NoProbeSessionIsSpentOnStartUp) {
  // -n 1: exit after one QUIT (counted only with -c). A readiness probe that connected
  // and quit would use it up.
  auto sink = start_sink({.extra_args = {"-c", "-n", "1"}});
  ASSERT_TRUE(sink);
  {
    auto client = connect_and_greet(*sink);
    ASSERT_TRUE(client);
    EXPECT_EQ(BlockingSmtpClient::code(client->command("QUIT")), 221);
  }
  bool exited = false;
  for (int i = 0; i < 500 && !exited; ++i) {  // up to 5 s
    exited = !sink->running();
    if (!exited) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(exited);
}

TEST(SmtpSinkProcess, MessageLimitExitsBeforeAnsweringTheLastDot) {
  auto sink = start_sink({.extra_args = {"-M", "1"}});
  ASSERT_TRUE(sink);
  auto client = connect_and_greet(*sink);
  ASSERT_TRUE(client);
  EXPECT_EQ(BlockingSmtpClient::code(client->command("EHLO x")), 250);
  EXPECT_EQ(send_transaction(*client, "a@b", {"c@d"}, "x\r\n"), 0);  // no reply: closed
  EXPECT_EQ(sink->messages_received(), 1u);
}

TEST(SmtpSinkProcess, StopKillsAndReaps) {
  auto sink = start_sink();
  ASSERT_TRUE(sink);
  const int pid = sink->pid();
  EXPECT_TRUE(sink->running());
  EXPECT_TRUE(sink->cpu_seconds().has_value());
  EXPECT_GE(*sink->cpu_seconds(), 0.0);
  sink->stop();
  EXPECT_FALSE(sink->running());
  EXPECT_FALSE(sink->cpu_seconds().has_value());
  EXPECT_EQ(::kill(pid, 0), -1);  // reaped: no zombie left with this pid
  sink.reset();                   // a second stop in the destructor is harmless
}

TEST(SmtpSinkProcess, ConcurrentSinksGetDistinctPorts) {
  std::vector<std::unique_ptr<SmtpSinkProcess>> sinks;
  for (int i = 0; i < 4; ++i) {
    sinks.push_back(start_sink({.capture = SinkCapture::kNone}));
    ASSERT_TRUE(sinks.back());
  }
  for (size_t i = 0; i < sinks.size(); ++i)
    for (size_t j = i + 1; j < sinks.size(); ++j) EXPECT_NE(sinks[i]->port(), sinks[j]->port());
}

TEST(SmtpSinkProcess, BadOptionsFailToStart) {
  auto reserved = SmtpSinkProcess::start({.extra_args = {"-D", "/tmp/x"}});
  ASSERT_FALSE(reserved.has_value());
  EXPECT_NE(reserved.error().find("-D"), std::string::npos);

  auto unknown = SmtpSinkProcess::start({.extra_args = {"-Z"}});
  ASSERT_FALSE(unknown.has_value());
  EXPECT_NE(unknown.error().find("exited at start-up"), std::string::npos) << unknown.error();

  auto missing = SmtpSinkProcess::start({.binary = "/nonexistent/smtp-sink"});
  ASSERT_FALSE(missing.has_value());
}

}  // namespace
}  // namespace ringmail::test

// Pins ScriptedSmtpServer's behaviour: standard replies, scripts, pipelined input, reply
// shaping (chunks, delays, extra lines, closes), transcripts and prompt shutdown.
#include "tests/support/scripted_smtp_server.h"

#include <gtest/gtest.h>

#include <mutex>

#include "tests/support/blocking_smtp_client.h"

namespace ringmail::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::unique_ptr<ScriptedSmtpServer> start_server(ScriptedSmtpServerOptions options = {}) {
  auto server = ScriptedSmtpServer::start(std::move(options));
  EXPECT_TRUE(server.has_value()) << server.error();
  return server ? std::move(*server) : nullptr;
}

std::optional<BlockingSmtpClient> connect(const ScriptedSmtpServer& server,
                                          std::chrono::milliseconds timeout = 5000ms) {
  auto client = BlockingSmtpClient::connect(server.port(), timeout);
  EXPECT_TRUE(client.has_value()) << client.error();
  if (!client) return std::nullopt;
  return std::move(*client);
}

int code(const std::expected<std::string, std::string>& reply) {
  return BlockingSmtpClient::code(reply);
}

TEST(ScriptedSmtpServer, StandardConversationIsRecorded) {
  auto server = start_server();
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(*client->read_reply(), "220 scripted.test ESMTP\r\n");
  EXPECT_EQ(*client->command("EHLO x"),
            "250-scripted.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n");
  EXPECT_EQ(code(client->command("MAIL FROM:<a@b>")), 250);
  EXPECT_EQ(code(client->command("RCPT TO:<c@d>")), 250);
  EXPECT_EQ(code(client->command("DATA")), 354);
  ASSERT_TRUE(client->send("Subject: s\r\n\r\n..stuffed\r\n"));
  EXPECT_EQ(code(client->command(".")), 250);
  EXPECT_EQ(code(client->command("QUIT")), 221);
  EXPECT_TRUE(client->wait_for_close());
  ASSERT_TRUE(server->wait_for_closed(1, 5s));

  auto transcripts = server->transcripts();
  ASSERT_EQ(transcripts.size(), 1u);
  EXPECT_EQ(transcripts[0].commands,
            (std::vector<std::string>{"EHLO x", "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA", ".",
                                      "QUIT"}));
  EXPECT_EQ(transcripts[0].messages, (std::vector<std::string>{"Subject: s\r\n\r\n..stuffed\r\n"}));
  EXPECT_TRUE(transcripts[0].closed);
  EXPECT_EQ(transcripts[0].bare_lf_lines, 0u);
  EXPECT_EQ(server->messages().size(), 1u);
}

TEST(ScriptedSmtpServer, ReadsPipelinedCommandsAndData) {
  auto server = start_server();
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  // Everything, message included, in one write.
  ASSERT_TRUE(
      client->send("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n"
                   "line1\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<g@h>\r\nDATA\r\n\r\n.\r\nQUIT\r\n"));
  for (int expected : {250, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221})
    EXPECT_EQ(code(client->read_reply()), expected);
  EXPECT_EQ(server->messages(), (std::vector<std::string>{"line1\r\n", "\r\n"}));
}

TEST(ScriptedSmtpServer, ScriptDecidesRepliesPerCommand) {
  std::mutex mutex;
  std::vector<std::pair<size_t, size_t>> seen;  // (connection, index) of each RCPT
  ScriptedSmtpServerOptions options;
  options.script = [&](const ScriptedCommand& command) -> std::optional<ScriptedReply> {
    if (command.verb == "CONNECT" && command.connection == 1)
      return ScriptedReply{.text = "421 4.3.2 busy\r\n", .close = true};
    if (command.verb == "RCPT") {
      std::lock_guard lock(mutex);
      seen.emplace_back(command.connection, command.index);
      if (command.argument.find("bad") != std::string::npos)
        return ScriptedReply::line("550 5.1.1 no such user");
    }
    if (command.verb == ".")
      return ScriptedReply::line("250 2.0.0 got " + std::to_string(command.message.size()));
    return std::nullopt;
  };
  auto server = start_server(std::move(options));
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  EXPECT_EQ(code(client->command("EHLO x")), 250);
  EXPECT_EQ(code(client->command("MAIL FROM:<a@b>")), 250);
  EXPECT_EQ(code(client->command("RCPT TO:<bad@d>")), 550);
  EXPECT_EQ(code(client->command("RCPT TO:<good@d>")), 250);
  EXPECT_EQ(code(client->command("DATA")), 354);  // one recipient was accepted
  EXPECT_EQ(*client->command("abc\r\n."), "250 2.0.0 got 5\r\n");
  EXPECT_EQ(code(client->command("MAIL FROM:<a@b>")), 250);
  EXPECT_EQ(code(client->command("RCPT TO:<bad@d>")), 550);
  EXPECT_EQ(code(client->command("DATA")), 554);  // none accepted: no 354
  EXPECT_EQ(code(client->command("RSET")), 250);

  auto second = connect(*server);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second->read_reply(), "421 4.3.2 busy\r\n");
  EXPECT_TRUE(second->wait_for_close());

  std::lock_guard lock(mutex);
  EXPECT_EQ(seen, (std::vector<std::pair<size_t, size_t>>{{0, 2}, {0, 3}, {0, 7}}));
}

TEST(ScriptedSmtpServer, WithoutPipeliningAndWithOtherExtensions) {
  auto server = start_server({.extensions = {"SIZE 1000"}, .advertise_pipelining = false});
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  EXPECT_EQ(*client->command("EHLO x"), "250-scripted.test\r\n250 SIZE 1000\r\n");
}

TEST(ScriptedSmtpServer, SplitsRepliesIntoChunks) {
  auto server = start_server({.reply_chunk_bytes = 3, .chunk_delay = 2ms});
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  const auto begin = Clock::now();
  EXPECT_EQ(*client->read_reply(), "220 scripted.test ESMTP\r\n");  // 25 bytes: 9 chunks
  EXPECT_GE(Clock::now() - begin, 16ms);                            // 8 pauses of 2 ms
  EXPECT_EQ(code(client->command("EHLO x")), 250);
}

TEST(ScriptedSmtpServer, CanStayWithoutGreeting) {
  auto server = start_server({.greeting = std::nullopt});
  ASSERT_TRUE(server);
  auto client = connect(*server, 300ms);
  ASSERT_TRUE(client);
  auto greeting = client->read_reply();
  ASSERT_FALSE(greeting.has_value());
  EXPECT_EQ(greeting.error(), "timed out");
  EXPECT_EQ(code(client->command("EHLO x")), 250);
}

TEST(ScriptedSmtpServer, CanNeverAnswer) {
  auto server = start_server({.never_answer = true});
  ASSERT_TRUE(server);
  auto client = connect(*server, 300ms);
  ASSERT_TRUE(client);
  EXPECT_FALSE(client->read_reply().has_value());
  EXPECT_FALSE(client->command("EHLO x").has_value());
  // It still listens: the command is in the transcript.
  auto transcripts = server->transcripts();
  ASSERT_EQ(transcripts.size(), 1u);
  EXPECT_EQ(transcripts[0].commands, (std::vector<std::string>{"EHLO x"}));
}

TEST(ScriptedSmtpServer, SendsAnExtraLineOnce) {
  auto server =
      start_server({.extra_line_after_verb = "MAIL", .extra_line = "250 2.0.0 surprise\r\n"});
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  EXPECT_EQ(code(client->command("MAIL FROM:<a@b>")), 250);
  EXPECT_EQ(*client->read_reply(), "250 2.0.0 surprise\r\n");
  EXPECT_EQ(code(client->command("RSET")), 250);
  EXPECT_EQ(*client->command("MAIL FROM:<a@b>"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(*client->command("NOOP"), "250 2.0.0 Ok\r\n");  // no second surprise queued
}

TEST(ScriptedSmtpServer, ClosesAfterAGivenVerb) {
  auto server = start_server({.close_after_verb = "RCPT"});
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  EXPECT_EQ(code(client->command("MAIL FROM:<a@b>")), 250);
  EXPECT_EQ(code(client->command("RCPT TO:<c@d>")), 250);
  EXPECT_TRUE(client->wait_for_close());
}

TEST(ScriptedSmtpServer, DelaysAReply) {
  ScriptedSmtpServerOptions options;
  options.script = [](const ScriptedCommand& command) -> std::optional<ScriptedReply> {
    if (command.verb == "NOOP") return ScriptedReply{.text = "250 late\r\n", .delay = 50ms};
    return std::nullopt;
  };
  auto server = start_server(std::move(options));
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  const auto begin = Clock::now();
  EXPECT_EQ(*client->command("NOOP"), "250 late\r\n");
  EXPECT_GE(Clock::now() - begin, 50ms);
}

TEST(ScriptedSmtpServer, TracksSimultaneousConnections) {
  auto server = start_server();
  ASSERT_TRUE(server);
  {
    std::vector<BlockingSmtpClient> clients;
    for (int i = 0; i < 5; ++i) {
      auto client = connect(*server);
      ASSERT_TRUE(client);
      EXPECT_EQ(code(client->read_reply()), 220);  // accepted and served
      clients.push_back(std::move(*client));
    }
  }
  ASSERT_TRUE(server->wait_for_closed(5, 5s));
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  EXPECT_EQ(server->connections_accepted(), 6u);
  EXPECT_EQ(server->max_simultaneous_connections(), 5u);
}

TEST(ScriptedSmtpServer, DropsAnOversizedLine) {
  auto server = start_server();
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  ASSERT_TRUE(client->send(std::string(ScriptedSmtpServer::kMaxLineBytes + 1024, 'x')));
  EXPECT_TRUE(client->wait_for_close());
}

TEST(ScriptedSmtpServer, CountsBareLineFeeds) {
  auto server = start_server();
  ASSERT_TRUE(server);
  auto client = connect(*server);
  ASSERT_TRUE(client);
  EXPECT_EQ(code(client->read_reply()), 220);
  ASSERT_TRUE(client->send("NOOP\n"));
  EXPECT_EQ(code(client->read_reply()), 250);
  auto transcripts = server->transcripts();
  EXPECT_EQ(transcripts[0].commands, (std::vector<std::string>{"NOOP"}));
  EXPECT_EQ(transcripts[0].bare_lf_lines, 1u);
}

TEST(ScriptedSmtpServer, StopsPromptlyWithBusyConnections) {
  ScriptedSmtpServerOptions options;
  options.script = [](const ScriptedCommand& command) -> std::optional<ScriptedReply> {
    if (command.verb == "NOOP") return ScriptedReply{.text = "250 never\r\n", .delay = 60s};
    return std::nullopt;
  };
  auto server = start_server(std::move(options));
  ASSERT_TRUE(server);
  auto idle = connect(*server);
  auto busy = connect(*server);
  ASSERT_TRUE(idle && busy);
  EXPECT_EQ(code(idle->read_reply()), 220);
  EXPECT_EQ(code(busy->read_reply()), 220);
  ASSERT_TRUE(busy->send("NOOP\r\n"));
  // Wait (bounded) until the server is inside the long delay.
  auto noop_received = [&] {
    for (const ConnectionTranscript& t : server->transcripts())
      if (!t.commands.empty()) return true;
    return false;
  };
  for (int i = 0; i < 500 && !noop_received(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(noop_received());
  const auto begin = Clock::now();
  server.reset();
  EXPECT_LT(Clock::now() - begin, 1s);
  EXPECT_TRUE(idle->wait_for_close());
  EXPECT_TRUE(busy->wait_for_close());
}

}  // namespace
}  // namespace ringmail::test

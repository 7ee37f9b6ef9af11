// How the engine says goodbye, seen by a scripted server: QUIT pipelined after the last
// dot of a connection that reached its message limit, and a bounded wait for the 221.
#include <gtest/gtest.h>

#include "tests/engine/engine_harness.h"
#include "tests/support/scripted_smtp_server.h"

namespace ringmail::test {
namespace {

std::unique_ptr<ScriptedSmtpServer> start_server(ScriptedSmtpServerOptions options) {
  auto server = ScriptedSmtpServer::start(std::move(options));
  if (!server) ADD_FAILURE() << server.error();
  return server ? std::move(*server) : nullptr;
}

TEST(Quit, ConnectionsClosedByTheMessageLimitEndWithQuit) {
  auto server = start_server({});
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_connections = 1;
  options.pool.max_messages_per_connection = 5;
  auto run = run_engine(options, "127.0.0.1", server->port(), make_items(20));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 20u);
  ASSERT_TRUE(server->wait_for_closed(4, std::chrono::seconds(10)));
  auto transcripts = server->transcripts();
  ASSERT_EQ(transcripts.size(), 4u);
  for (auto& t : transcripts) {
    EXPECT_EQ(t.messages.size(), 5u);
    ASSERT_GE(t.commands.size(), 2u);
    EXPECT_EQ(t.commands[t.commands.size() - 2], ".");
    EXPECT_EQ(t.commands.back(), "QUIT");
  }
}

TEST(Quit, QuitFollowsTheLastDotWithoutWaitingForItsReply) {
  // The server never answers the connection's last dot: the QUIT it still receives can
  // only have been sent with that dot (RFC 2920), not after its reply. (QUIT is not
  // answered either, or its 221 would be taken for the dot's reply.)
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == "." && c.message.find("r000001@") != std::string::npos) return ScriptedReply{};
    if (c.verb == "QUIT") return ScriptedReply{};
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_connections = 1;
  options.pool.max_messages_per_connection = 2;
  options.timeouts.data_end = engine::Seconds(1);
  // make_items' bodies do not name the recipient: give each message its own.
  auto items = make_items(2);
  for (auto& item : items)
    item.body = std::make_shared<const std::string>(
        smtp::encode_data_body("Subject: test\r\nTo: " + item.recipient + "\r\n\r\nhello\r\n"));
  auto run = run_engine(options, "127.0.0.1", server->port(), std::move(items));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.by_recipient["r000000@example.test"].status, smtp::RecipientStatus::kDelivered);
  auto& unanswered = run.by_recipient["r000001@example.test"];
  EXPECT_EQ(unanswered.status, smtp::RecipientStatus::kDeferred);
  EXPECT_EQ(unanswered.reply.enhanced.to_string(), "4.4.7") << unanswered.reply.to_string();
  auto transcripts = server->transcripts();
  ASSERT_EQ(transcripts.size(), 1u);
  auto& commands = transcripts[0].commands;
  ASSERT_GE(commands.size(), 2u);
  EXPECT_EQ(commands[commands.size() - 2], ".");
  EXPECT_EQ(commands.back(), "QUIT");
}

TEST(Quit, ASilentReplyToQuitHoldsTheConnectionOnlyBriefly) {
  // No 221 ever comes: the connection is closed after timeouts.quit, not after the
  // five-minute command timeout, and the mail already delivered stays delivered.
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == "QUIT") return ScriptedReply{};
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_connections = 1;
  options.pool.max_messages_per_connection = 3;
  options.timeouts.command = engine::Seconds(300);
  options.timeouts.quit = engine::Seconds(0.5);
  auto run = run_engine(options, "127.0.0.1", server->port(), make_items(6), std::chrono::seconds(60));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 6u);
  EXPECT_EQ(run.counts.connection_failures, 0u);  // a lost goodbye says nothing of the host
  ASSERT_TRUE(server->wait_for_closed(2, std::chrono::seconds(10)));
  for (auto& t : server->transcripts()) EXPECT_EQ(t.commands.back(), "QUIT");
}

}  // namespace
}  // namespace ringmail::test

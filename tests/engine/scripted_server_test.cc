// The engine against a scripted server on loopback, for replies smtp-sink cannot give:
// per-recipient results in one pipelined transaction, replies split across reads,
// multi-line, oversized and garbage replies, silence, plus pool limits and draining.
#include <gtest/gtest.h>

#include <thread>

#include "tests/engine/engine_harness.h"
#include "tests/support/scripted_smtp_server.h"

namespace ringmail::test {
namespace {

using smtp::RecipientStatus;

std::unique_ptr<ScriptedSmtpServer> start_server(ScriptedSmtpServerOptions options) {
  auto server = ScriptedSmtpServer::start(std::move(options));
  if (!server) ADD_FAILURE() << server.error();
  return server ? std::move(*server) : nullptr;
}

EngineRun run_against(ScriptedSmtpServer& server, engine::EngineOptions options, size_t count,
                      std::chrono::seconds limit = std::chrono::seconds(30)) {
  return run_engine(options, "127.0.0.1", server.port(), make_items(count), limit);
}

TEST(ScriptedServer, MixedRecipientRepliesInOnePipelinedTransaction) {
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb != "RCPT") return std::nullopt;
    if (c.argument.find("r000001@") != std::string::npos)
      return ScriptedReply::line("450 4.2.2 mailbox full");
    if (c.argument.find("r000003@") != std::string::npos)
      return ScriptedReply::line("550 5.1.1 no such user");
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_recipients_per_transaction = 5;
  auto run = run_against(*server, options, 5);
  ASSERT_TRUE(run.finished);
  ASSERT_EQ(run.by_recipient.size(), 5u);
  auto& deferred = run.by_recipient["r000001@example.test"];
  EXPECT_EQ(deferred.status, RecipientStatus::kDeferred);
  EXPECT_EQ(deferred.reply.code, 450);
  EXPECT_EQ(deferred.reply.enhanced.to_string(), "4.2.2");
  auto& bounced = run.by_recipient["r000003@example.test"];
  EXPECT_EQ(bounced.status, RecipientStatus::kBounced);
  EXPECT_EQ(bounced.reply.enhanced.to_string(), "5.1.1");
  EXPECT_EQ(run.counts.recipients_delivered, 3u);
  // One message, carried to the three accepted recipients.
  EXPECT_EQ(server->messages().size(), 1u);
  auto transcripts = server->transcripts();
  ASSERT_EQ(transcripts.size(), 1u);
  auto& cmds = transcripts[0].commands;
  ASSERT_GE(cmds.size(), 9u);
  EXPECT_EQ(cmds[1].rfind("MAIL FROM:<sender@example.test>", 0), 0u);
  for (int i = 2; i < 7; ++i) EXPECT_EQ(cmds[i].rfind("RCPT TO:<", 0), 0u) << cmds[i];
  EXPECT_EQ(cmds[7], "DATA");
}

TEST(ScriptedServer, AllRecipientsRefusedSendsNoBody) {
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == "RCPT") return ScriptedReply::line("550 5.1.1 no such user");
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_recipients_per_transaction = 3;
  auto run = run_against(*server, options, 9);
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_bounced, 9u);
  EXPECT_TRUE(server->messages().empty());
}

TEST(ScriptedServer, RepliesSplitAcrossManyReads) {
  ScriptedSmtpServerOptions o;
  o.reply_chunk_bytes = 3;
  o.chunk_delay = std::chrono::milliseconds(1);
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto run = run_against(*server, test_options(), 20);
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 20u);
  EXPECT_EQ(server->messages().size(), 20u);
}

TEST(ScriptedServer, MultiLineRepliesAreJoined) {
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250-2.0.0 first line\r\n250-second\r\n250 2.0.0 queued as X\r\n"};
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto run = run_against(*server, test_options(), 3);
  ASSERT_TRUE(run.finished);
  ASSERT_EQ(run.counts.recipients_delivered, 3u);
  auto& r = run.by_recipient.begin()->second.reply;
  EXPECT_EQ(r.code, 250);
  EXPECT_NE(r.text.find("queued as X"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("second"), std::string::npos) << r.text;
}

// A broken reply fails that session only: its recipients are deferred as a protocol error
// and the process carries on.
void expect_protocol_error(std::string reply_to_mail) {
  ScriptedSmtpServerOptions o;
  o.script = [reply_to_mail](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == "MAIL") return ScriptedReply{reply_to_mail};
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto run = run_against(*server, test_options(), 4);
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_deferred, 4u);
  for (auto& [rcpt, outcome] : run.by_recipient) {
    EXPECT_EQ(outcome.reply.enhanced.to_string(), "4.5.0") << outcome.reply.to_string();
    EXPECT_FALSE(outcome.reply.text.empty());
  }
}

TEST(ScriptedServer, OversizedReplyLineIsAProtocolError) {
  expect_protocol_error("250 " + std::string(10000, 'x') + "\r\n");
}

TEST(ScriptedServer, GarbageReplyIsAProtocolError) { expect_protocol_error("hello there\r\n"); }

TEST(ScriptedServer, WrongCodeClassIsAProtocolError) { expect_protocol_error("354 go ahead\r\n"); }

TEST(ScriptedServer, ServerThatNeverAnswersTimesOut) {
  ScriptedSmtpServerOptions o;
  o.never_answer = true;
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto options = test_options();
  options.timeouts.greeting = engine::Seconds(0.5);
  auto started = std::chrono::steady_clock::now();
  auto run = run_against(*server, options, 10);
  ASSERT_TRUE(run.finished);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
  EXPECT_EQ(run.counts.recipients_deferred, 10u);
  auto& outcome = run.by_recipient.begin()->second;
  EXPECT_EQ(outcome.reply.enhanced.to_string(), "4.4.7") << outcome.reply.to_string();
  EXPECT_NE(outcome.reply.text.find("timeout"), std::string::npos);
}

TEST(ScriptedServer, RefusedGreetingDefersWithTheServersReply) {
  ScriptedSmtpServerOptions o;
  o.greeting = "554 5.7.1 go away";
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto run = run_against(*server, test_options(), 50);
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_deferred, 50u);
  EXPECT_LE(server->connections_accepted(), 10u);  // the site is given up, not hammered
  EXPECT_EQ(run.by_recipient.begin()->second.reply.code, 554);
}

// A server whose reply to the end of data takes `delay`: slow final replies keep every
// connection busy, so the pool wants to open more.
ScriptedSmtpServerOptions slow_final_replies(std::chrono::milliseconds delay) {
  ScriptedSmtpServerOptions o;
  o.script = [delay](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, delay};
    return std::nullopt;
  };
  return o;
}

TEST(ScriptedServer, PoolLimitAndConnectionReuse) {
  auto server = start_server(slow_final_replies(std::chrono::milliseconds(2)));
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_connections = 3;
  auto run = run_against(*server, options, 300);
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 300u);
  EXPECT_EQ(server->messages().size(), 300u);
  EXPECT_LE(server->max_simultaneous_connections(), 3u);
  EXPECT_LE(server->connections_accepted(), 3u);
  // Reused: many transactions per connection, each one after the previous dot (no RSET
  // needed after a successful transaction).
  size_t most = 0;
  for (auto& t : server->transcripts()) most = std::max(most, t.messages.size());
  EXPECT_GE(most, 50u);
}

// Slow start: a destination gets at most 3 connections until one reaches EHLO's reply,
// then the rest of max_connections as its work needs them.
TEST(ScriptedServer, AfterTheFirstWorkingConnectionThePoolOpensTheRest) {
  auto server = start_server(slow_final_replies(std::chrono::milliseconds(20)));
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_connections = 8;
  options.pool.max_recipients_per_transaction = 1;
  auto run = run_against(*server, options, 200);
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 200u);
  EXPECT_GT(server->max_simultaneous_connections(), 3u);
  EXPECT_LE(server->max_simultaneous_connections(), 8u);
}

TEST(ScriptedServer, WithoutPipeliningOneCommandAtATime) {
  ScriptedSmtpServerOptions o;
  o.advertise_pipelining = false;
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_recipients_per_transaction = 3;
  auto run = run_against(*server, options, 30);
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 30u);
  EXPECT_EQ(server->messages().size(), 10u);
}

TEST(ScriptedServer, DrainFinishesInFlightAndAccountsForEveryRecipient) {
  ScriptedSmtpServerOptions o;
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    if (c.verb == ".") return ScriptedReply{"250 2.0.0 ok\r\n", false, std::chrono::milliseconds(20)};
    return std::nullopt;
  };
  auto server = start_server(o);
  ASSERT_TRUE(server);
  auto options = test_options();
  options.pool.max_connections = 2;
  engine::StaticRelayResolver resolver(engine::Destination{"127.0.0.1", server->port()});
  RecordingSink sink;
  VectorJobSource source(make_items(2000));
  engine::DeliverySnapshot counts;
  {
    engine::Engine engine(options, resolver, &sink);
    engine.start(source);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    engine.request_drain();
    ASSERT_TRUE(engine.wait_for(std::chrono::seconds(10)));
    counts = engine.snapshot();
  }
  EXPECT_GT(counts.recipients_delivered, 0u);
  EXPECT_GT(counts.recipients_not_attempted, 0u);
  EXPECT_EQ(counts.recipients_deferred, 0u);  // in-flight work finished, not cut off
  // Every recipient the feeder took got exactly one outcome.
  auto outcomes = sink.by_recipient();
  size_t reported = counts.recipients_delivered + counts.recipients_not_attempted;
  EXPECT_EQ(outcomes.size(), reported);
  EXPECT_EQ(server->messages().size(), counts.recipients_delivered);
}

}  // namespace
}  // namespace ringmail::test

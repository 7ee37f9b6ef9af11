// The engine against Postfix's smtp-sink on loopback: bulk delivery with and without
// pipelining, and every fault smtp-sink can inject ending in the right outcome.
#include <gtest/gtest.h>

#include "tests/engine/engine_harness.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

using smtp::RecipientStatus;

std::unique_ptr<SmtpSinkProcess> start_sink(std::vector<std::string> args,
                                            SinkCapture capture = SinkCapture::kDump) {
  SmtpSinkOptions o;
  o.extra_args = std::move(args);
  o.capture = capture;
  auto sink = SmtpSinkProcess::start(o);
  if (!sink) ADD_FAILURE() << sink.error();
  return sink ? std::move(*sink) : nullptr;
}

size_t count_status(const EngineRun& run, RecipientStatus status) {
  size_t n = 0;
  for (auto& [rcpt, outcome] : run.by_recipient) n += outcome.status == status;
  return n;
}

TEST(SinkDelivery, ThousandsOfMessagesPipelined) {
  auto sink = start_sink({});
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.pool.max_connections = 8;
  auto run = run_engine(options, "127.0.0.1", sink->port(), make_items(5000));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 5000u);
  EXPECT_EQ(run.counts.transactions_finished, 5000u);
  EXPECT_EQ(sink->messages_received(), 5000u);
  EXPECT_EQ(sink->recipients_received(), 5000u);
  EXPECT_EQ(run.by_recipient.size(), 5000u);
  // Connections are reused: far fewer than messages.
  EXPECT_LE(run.counts.connections_opened, 8u);
  EXPECT_EQ(run.counts.connection_failures, 0u);
}

TEST(SinkDelivery, ThousandsOfMessagesWithoutPipelining) {
  auto sink = start_sink({"-p"});
  ASSERT_TRUE(sink);
  auto run = run_engine(test_options(), "127.0.0.1", sink->port(), make_items(2000));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 2000u);
  EXPECT_EQ(sink->messages_received(), 2000u);
}

// [pool] messages_per_second / --rate: the bucket starts full, and a full bucket must let
// the first connection open (it once held every rate-limited pool back for ever).
TEST(SinkDelivery, ARateLimitedDestinationDeliversEverything) {
  auto sink = start_sink({});
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.pool.max_connections = 4;
  options.pool.messages_per_second = 100;  // one second's burst, then 100/s: ~1 s in all
  auto run = run_engine(options, "127.0.0.1", sink->port(), make_items(200));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 200u);
  EXPECT_EQ(sink->messages_received(), 200u);
  EXPECT_GE(run.counts.connections_opened, 1u);
}

TEST(SinkDelivery, SingleReceiveFallbackDeliversToo) {
  auto sink = start_sink({});
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.multishot_receive = false;
  options.pool.max_recipients_per_transaction = 3;
  auto run = run_engine(options, "127.0.0.1", sink->port(), make_items(3000));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 3000u);
  EXPECT_EQ(sink->recipients_received(), 3000u);
}

TEST(SinkDelivery, ManyRecipientsPerTransaction) {
  auto sink = start_sink({});
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.pool.max_recipients_per_transaction = 10;
  auto run = run_engine(options, "127.0.0.1", sink->port(), make_items(3005));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 3005u);
  EXPECT_EQ(run.counts.transactions_finished, 301u);
  EXPECT_EQ(sink->messages_received(), 301u);
  EXPECT_EQ(sink->recipients_received(), 3005u);
}

TEST(SinkDelivery, BodyArrivesIntact) {
  auto sink = start_sink({});
  ASSERT_TRUE(sink);
  std::string content = "Subject: dots\n\n.leading dot\n..two\nbare\rcr\n.\nend";
  auto body = std::make_shared<const std::string>(smtp::encode_data_body(content));
  std::vector<engine::DeliveryItem> items{{"s@example.test", "r@example.test", body}};
  auto run = run_engine(test_options(), "127.0.0.1", sink->port(), std::move(items));
  ASSERT_TRUE(run.finished);
  auto txns = sink->transactions();
  ASSERT_EQ(txns.size(), 1u);
  // smtp-sink drops CRs and undoes dot-stuffing; the bare CR became a line break.
  EXPECT_EQ(txns[0].content, "Subject: dots\n\n.leading dot\n..two\nbare\ncr\n.\nend\n");
  EXPECT_EQ(txns[0].rcpt_to, std::vector<std::string>{"<r@example.test>"});
}

struct FaultCase {
  const char* name;
  std::vector<std::string> args;
  RecipientStatus expected;
  int expected_code_class;  // 4 or 5, 0 for a locally made outcome
  // The server drops the connection after the fault, so the transaction pipelined after
  // the failed one is lost with it: those recipients are deferred instead.
  bool pipelined_next_deferred = false;
};

class SinkFault : public ::testing::TestWithParam<FaultCase> {};

TEST_P(SinkFault, EndsInTheRightOutcomeAndTheProcessGoesOn) {
  const FaultCase& c = GetParam();
  auto sink = start_sink(c.args);
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.pool.max_recipients_per_transaction = 2;
  auto run = run_engine(options, "127.0.0.1", sink->port(), make_items(40), std::chrono::seconds(60));
  ASSERT_TRUE(run.finished);
  ASSERT_EQ(run.by_recipient.size(), 40u);
  EXPECT_EQ(run.counts.recipients_delivered, 0u);
  if (c.pipelined_next_deferred) {
    EXPECT_GE(count_status(run, c.expected), 20u) << c.name;
    EXPECT_EQ(count_status(run, c.expected) + count_status(run, RecipientStatus::kDeferred), 40u);
  } else {
    EXPECT_EQ(count_status(run, c.expected), 40u) << c.name;
  }
  for (auto& [rcpt, outcome] : run.by_recipient) {
    if (outcome.status != c.expected) continue;
    EXPECT_EQ(outcome.reply.code / 100, c.expected_code_class) << rcpt << " " << outcome.reply.to_string();
    break;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Faults, SinkFault,
    ::testing::Values(
        FaultCase{"RcptHardReject", {"-f", "RCPT"}, RecipientStatus::kBounced, 5},
        FaultCase{"RcptSoftReject", {"-r", "RCPT"}, RecipientStatus::kDeferred, 4},
        FaultCase{"MailHardReject", {"-f", "MAIL"}, RecipientStatus::kBounced, 5},
        FaultCase{"DataSoftReject", {"-r", "DATA"}, RecipientStatus::kDeferred, 4},
        FaultCase{"DotHardReject", {"-f", "."}, RecipientStatus::kBounced, 5},
        FaultCase{"DotSoftReject", {"-r", "."}, RecipientStatus::kDeferred, 4},
        FaultCase{"DisconnectAfterRcpt", {"-q", "RCPT"}, RecipientStatus::kDeferred, 0},
        FaultCase{"DisconnectAfterDot", {"-q", "."}, RecipientStatus::kDeferred, 0},
        FaultCase{"Reply421AfterMail", {"-Q", "MAIL"}, RecipientStatus::kDeferred, 4},
        FaultCase{"Reply421AtConnect", {"-Q", "CONNECT"}, RecipientStatus::kDeferred, 4},
        FaultCase{"AbortAfterData", {"-A", "0"}, RecipientStatus::kBounced, 5, true}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(SinkDelivery, SlowDataReadsStillDeliver) {
  // The sink waits before reading the body, over a small TCP window: our send completes
  // late and in pieces, and must neither time out nor corrupt the stream.
  auto sink = start_sink({"-H", "1", "-T", "4096"});
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.pool.max_connections = 2;
  auto run = run_engine(options, "127.0.0.1", sink->port(), make_items(6, 200 * 1024));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 6u);
  EXPECT_EQ(sink->messages_received(), 6u);
}

TEST(SinkDelivery, DeadDestinationIsDeferredNotHammered) {
  // Nothing listens on this port (a sink started and stopped leaves it free).
  uint16_t port;
  {
    auto sink = start_sink({}, SinkCapture::kNone);
    ASSERT_TRUE(sink);
    port = sink->port();
  }
  auto options = test_options();
  auto run = run_engine(options, "127.0.0.1", port, make_items(500));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_deferred, 500u);
  // The destination is given up after a few refused connections, not once per message.
  EXPECT_LE(run.counts.connections_opened, 10u);
  auto outcome = run.by_recipient.begin()->second;
  EXPECT_NE(outcome.reply.text.find("connect"), std::string::npos) << outcome.reply.text;
}

TEST(SinkDelivery, ConnectionReuseLimitOpensFreshConnections) {
  auto sink = start_sink({});
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.pool.max_connections = 1;
  options.pool.max_messages_per_connection = 10;
  auto run = run_engine(options, "127.0.0.1", sink->port(), make_items(100));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 100u);
  EXPECT_EQ(run.counts.connections_opened, 10u);
}

// One message per connection: each connection is asked to QUIT as it takes its message,
// before its greeting, so its session goes from EHLO straight to the transaction and QUIT
// without an idle ready state. That is still a host that works: it once counted as a
// failed connection, and after three the destination was given up as dead.
TEST(SinkDelivery, OneMessagePerConnectionIsNotAFailure) {
  auto sink = start_sink({});
  ASSERT_TRUE(sink);
  auto options = test_options();
  options.pool.max_connections = 1;
  options.pool.max_messages_per_connection = 1;
  auto run = run_engine(options, "127.0.0.1", sink->port(), make_items(7));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 7u);
  EXPECT_EQ(run.counts.connections_opened, 7u);
  EXPECT_EQ(run.counts.connection_failures, 0u);
}

}  // namespace
}  // namespace ringmail::test

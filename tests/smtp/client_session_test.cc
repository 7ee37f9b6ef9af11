// ClientSession behaviours that transcripts show less directly: queue limits, partial
// sends and not_attempted, output segment shape and address stability, abort idempotence,
// the TLS hand-over to the transport and the handling of credentials.
#include "smtp/client_session.h"

#include <gtest/gtest.h>

#include <array>
#include <string>

#include "smtp/message_body.h"

namespace ringmail::smtp {
namespace {

Transaction txn(uint64_t id, std::vector<std::string> rcpts, EncodedBody body) {
  Transaction t;
  t.id = id;
  t.sender = "s@example.org";
  t.recipients = std::move(rcpts);
  t.body = std::move(body);
  return t;
}

EncodedBody body(std::string_view content) {
  return std::make_shared<const std::string>(encode_data_body(content));
}

std::string pending(const ClientSession& s) {
  std::array<std::string_view, 16> segments;
  size_t n = s.pending_output(segments);
  std::string out;
  for (size_t i = 0; i < n; ++i) out.append(segments[i]);
  return out;
}

std::string send_all(ClientSession& s) {
  std::string out = pending(s);
  s.mark_sent(out.size());
  return out;
}

void ready(ClientSession& s, bool pipelining = true) {
  s.receive("220 mx ESMTP\r\n");
  EXPECT_EQ(send_all(s), "EHLO localhost\r\n");
  s.receive(pipelining ? "250-mx\r\n250 PIPELINING\r\n" : "250 mx\r\n");
}

TEST(ClientSessionTest, QueueLimitFollowsPipelining) {
  ClientSession s({});
  EXPECT_EQ(s.phase(), SessionPhase::kConnecting);
  EXPECT_EQ(s.awaiting(), Awaiting::kGreeting);
  EXPECT_EQ(s.max_queued_transactions(), 1u);
  EXPECT_TRUE(s.can_accept_transaction());
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  EXPECT_FALSE(s.can_accept_transaction());
  EXPECT_EQ(pending(s), "");  // nothing before the greeting
  ready(s);
  EXPECT_EQ(s.phase(), SessionPhase::kReady);
  EXPECT_EQ(s.max_queued_transactions(), 2u);
  EXPECT_TRUE(s.can_accept_transaction());
  EXPECT_FALSE(s.idle());

  ClientSession lock({});
  ready(lock, /*pipelining=*/false);
  EXPECT_EQ(lock.max_queued_transactions(), 1u);
  EXPECT_TRUE(lock.idle());
}

TEST(ClientSessionTest, BodySegmentPointsIntoTheSharedBody) {
  ClientSession s({});
  EncodedBody b = body("Subject: x\n\nhello\n");
  ready(s);
  s.add_transaction(txn(1, {"a@x"}, b));
  s.add_transaction(txn(2, {"b@x"}, b));
  EXPECT_EQ(send_all(s), "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@x>\r\nDATA\r\n");
  s.receive("250 ok\r\n250 ok\r\n354 go\r\n");
  std::array<std::string_view, 16> segments;
  ASSERT_EQ(s.pending_output(segments), 2u);
  EXPECT_EQ(segments[0].data(), b->data());  // not copied
  EXPECT_EQ(segments[0].size(), b->size());
  EXPECT_EQ(segments[1], ".\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<b@x>\r\nDATA\r\n");
  EXPECT_EQ(s.pending_output(std::span(segments).first(1)), 1u);
  EXPECT_EQ(s.pending_output_bytes(), b->size() + segments[1].size());
}

TEST(ClientSessionTest, OfferedBytesStayPutUntilSent) {
  // A send may be in flight while input arrives and commands are added.
  ClientSession s({});
  ready(s);
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  std::array<std::string_view, 16> segments;
  ASSERT_EQ(s.pending_output(segments), 1u);
  const std::string_view first = segments[0];
  const std::string copy(first);
  s.mark_sent(5);
  s.receive("250 ok\r\n250 ok\r\n354 go\r\n");
  s.add_transaction(txn(2, {"b@x"}, body("there")));
  for (int i = 0; i < 50; ++i) s.add_transaction(txn(3 + i, {"c@x"}, body("more")));
  EXPECT_EQ(first, copy);  // same address, same bytes
  ASSERT_GE(s.pending_output(segments), 1u);
  EXPECT_EQ(segments[0].data(), first.data() + 5);
}

TEST(ClientSessionTest, NotAttemptedMeansNoByteOfMailSent) {
  ClientSession s({});
  ready(s);
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  s.mark_sent(0);
  s.abort({4, 4, 2}, "lost");
  ASSERT_EQ(s.finished().size(), 1u);
  EXPECT_TRUE(s.finished()[0].not_attempted);
  EXPECT_EQ(s.finished()[0].recipients[0].status, RecipientStatus::kDeferred);
  EXPECT_EQ(s.finished()[0].recipients[0].reply.code, 0);
  EXPECT_EQ(s.finished()[0].recipients[0].reply.enhanced, (EnhancedCode{4, 4, 2}));
  EXPECT_EQ(s.finished()[0].recipients[0].reply.text, "lost");
  EXPECT_EQ(s.phase(), SessionPhase::kClosed);
  EXPECT_EQ(s.pending_output_bytes(), 0u);

  ClientSession t({});
  ready(t);
  t.add_transaction(txn(1, {"a@x"}, body("hi")));
  t.mark_sent(1);  // the "M" of MAIL
  t.abort({4, 4, 7}, "timeout after MAIL");
  ASSERT_EQ(t.finished().size(), 1u);
  EXPECT_FALSE(t.finished()[0].not_attempted);
}

TEST(ClientSessionTest, RsetBytesDoNotMakeTheNextTransactionAttempted) {
  ClientSession s({});
  ready(s);
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  s.add_transaction(txn(2, {"b@x"}, body("hi")));
  send_all(s);
  s.receive("250 ok\r\n550 no\r\n554 no valid recipients\r\n");
  ASSERT_EQ(s.finished().size(), 1u);
  EXPECT_EQ(s.finished()[0].recipients[0].status, RecipientStatus::kBounced);
  EXPECT_EQ(s.transactions_completed(), 1u);
  s.finished().clear();
  const std::string out = pending(s);
  ASSERT_TRUE(out.starts_with("RSET\r\nMAIL FROM:")) << out;
  s.mark_sent(6);  // RSET only
  s.abort({4, 4, 2}, "lost");
  ASSERT_EQ(s.finished().size(), 1u);
  EXPECT_TRUE(s.finished()[0].not_attempted);
  s.mark_sent(10);  // a send in flight at the abort completes: ignored
}

TEST(ClientSessionTest, AbortIsIdempotentAndLaterTransactionsComeBack) {
  ClientSession s({});
  ready(s);
  s.add_transaction(txn(1, {"a@x", "b@x"}, body("hi")));
  send_all(s);
  s.abort({4, 4, 7}, "timeout");
  s.abort({4, 4, 2}, "lost");
  ASSERT_EQ(s.finished().size(), 1u);
  EXPECT_EQ(s.finished()[0].recipients[1].reply.text, "timeout");
  EXPECT_FALSE(s.can_accept_transaction());
  s.add_transaction(txn(2, {"c@x"}, body("hi")));
  ASSERT_EQ(s.finished().size(), 2u);
  EXPECT_TRUE(s.finished()[1].not_attempted);
  EXPECT_EQ(s.finished()[1].recipients[0].status, RecipientStatus::kDeferred);
  s.receive("250 late\r\n");  // ignored once closed
  EXPECT_EQ(s.finished().size(), 2u);
}

TEST(ClientSessionTest, AddressWithLineBreakBouncesLocally) {
  ClientSession s({});
  ready(s);
  s.add_transaction(txn(1, {"a@x", "b@x>\r\nRCPT TO:<evil@y"}, body("hi")));
  ASSERT_EQ(s.finished().size(), 1u);
  EXPECT_TRUE(s.finished()[0].not_attempted);
  EXPECT_EQ(s.finished()[0].recipients[0].status, RecipientStatus::kBounced);
  EXPECT_EQ(s.finished()[0].recipients[0].reply.enhanced, (EnhancedCode{5, 1, 3}));
  EXPECT_EQ(pending(s), "");
  EXPECT_TRUE(s.idle());
}

TEST(ClientSessionTest, AwaitingTracksTheOldestCommand) {
  ClientSession s({});
  ready(s, /*pipelining=*/false);
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  EXPECT_EQ(s.awaiting(), Awaiting::kCommand);
  send_all(s);
  s.receive("250 ok\r\n");
  send_all(s);
  s.receive("250 ok\r\n");
  EXPECT_EQ(send_all(s), "DATA\r\n");
  EXPECT_EQ(s.awaiting(), Awaiting::kDataStart);
  s.receive("354 go\r\n");
  EXPECT_EQ(send_all(s), "hi\r\n.\r\n");
  EXPECT_EQ(s.awaiting(), Awaiting::kDataEnd);
  s.receive("250 queued\r\n");
  EXPECT_EQ(s.awaiting(), Awaiting::kNothing);
  EXPECT_TRUE(s.idle());
  ASSERT_EQ(s.finished().size(), 1u);
  EXPECT_EQ(s.finished()[0].recipients[0].status, RecipientStatus::kDelivered);
  EXPECT_EQ(s.finished()[0].recipients[0].reply.text, "queued");
  s.quit();
  EXPECT_EQ(s.phase(), SessionPhase::kQuitting);
  EXPECT_EQ(send_all(s), "QUIT\r\n");
  EXPECT_FALSE(s.can_accept_transaction());
  s.receive("221 bye\r\n");
  EXPECT_EQ(s.phase(), SessionPhase::kClosed);
}

TEST(ClientSessionTest, QuitWaitsForQueuedTransactions) {
  ClientSession s({});
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  s.quit();
  EXPECT_FALSE(s.can_accept_transaction());
  EXPECT_FALSE(s.accepted());
  ready(s);
  EXPECT_EQ(s.phase(), SessionPhase::kQuitting);  // never kReady...
  EXPECT_TRUE(s.accepted());                      // ...yet the server took the session
  EXPECT_EQ(send_all(s), "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@x>\r\nDATA\r\n");
  s.receive("250 ok\r\n250 ok\r\n354 go\r\n");
  // With PIPELINING, QUIT goes with the last dot (RFC 2920); the dot's reply still decides.
  EXPECT_EQ(send_all(s), "hi\r\n.\r\nQUIT\r\n");
  s.receive("250 ok\r\n");
  EXPECT_EQ(s.phase(), SessionPhase::kQuitting);
  EXPECT_EQ(send_all(s), "");
  s.receive("221 bye\r\n");
  EXPECT_EQ(s.phase(), SessionPhase::kClosed);
  EXPECT_EQ(s.transactions_completed(), 1u);
  EXPECT_TRUE(s.accepted());
}

TEST(ClientSessionTest, ARefusedGreetingIsNotAccepted) {
  ClientSession s({});
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  s.quit();
  s.receive("554 go away\r\n");
  EXPECT_FALSE(s.accepted());
}

TEST(ClientSessionTest, EmptyBodySendsOnlyTheDot) {
  ClientSession s({});
  ready(s);
  s.add_transaction(txn(1, {"a@x"}, body("")));
  send_all(s);
  s.receive("250 ok\r\n250 ok\r\n354 go\r\n");
  std::array<std::string_view, 16> segments;
  ASSERT_EQ(s.pending_output(segments), 1u);
  EXPECT_EQ(segments[0], ".\r\n");
}

TEST(ClientSessionTest, SteadyStateReusesBuffers) {
  // Many messages through one pipelined session: output segments never pile up.
  ClientSession s({});
  ready(s);
  EncodedBody b = body("x\n");
  uint64_t next = 1;
  while (s.can_accept_transaction()) s.add_transaction(txn(next++, {"a@x"}, b));
  send_all(s);
  s.receive("250 ok\r\n250 ok\r\n354 go\r\n");
  for (int i = 0; i < 1000; ++i) {
    std::array<std::string_view, 16> segments;
    EXPECT_EQ(s.pending_output(segments), 2u);
    send_all(s);
    s.receive("250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    ASSERT_EQ(s.finished().size(), 1u);
    s.finished().clear();
    while (s.can_accept_transaction()) s.add_transaction(txn(next++, {"a@x"}, b));
  }
  EXPECT_EQ(s.transactions_completed(), 1000u);
  EXPECT_EQ(b.use_count(), 1 + 2 + 1);  // ours, two queued transactions, one segment
}

// ---- STARTTLS and AUTH ------------------------------------------------------------------

SessionOptions tls_options(StartTlsPolicy policy) {
  SessionOptions options;
  options.starttls = policy;
  return options;
}

// Greeting, EHLO offering PIPELINING and STARTTLS, STARTTLS accepted.
void to_handshake(ClientSession& s) {
  s.receive("220 mx ESMTP\r\n");
  EXPECT_EQ(send_all(s), "EHLO localhost\r\n");
  s.receive("250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
  EXPECT_EQ(send_all(s), "STARTTLS\r\n");
  s.receive("220 go ahead\r\n");
}

TEST(ClientSessionTest, TlsHandshakeHandsTheStreamToTheTransport) {
  ClientSession s(tls_options(StartTlsPolicy::kIfOffered));
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  EXPECT_FALSE(s.secure());
  to_handshake(s);
  EXPECT_TRUE(s.wants_tls_handshake());
  EXPECT_EQ(s.phase(), SessionPhase::kTlsHandshake);
  EXPECT_EQ(s.awaiting(), Awaiting::kCommand);  // a stalled handshake times out
  EXPECT_EQ(s.pending_output_bytes(), 0u);
  EXPECT_FALSE(s.idle());
  // PIPELINING was offered in plaintext only: not yet a reason to queue more.
  EXPECT_EQ(s.max_queued_transactions(), 1u);
  EXPECT_FALSE(s.can_accept_transaction());
  // Plaintext arriving now (injected, or ciphertext given by mistake) is dropped unread.
  s.receive("250 injected\r\n\x16\x03\x03 garbage");
  EXPECT_TRUE(s.wants_tls_handshake());
  EXPECT_TRUE(s.finished().empty());
  s.tls_established();
  EXPECT_FALSE(s.wants_tls_handshake());
  EXPECT_TRUE(s.secure());
  EXPECT_FALSE(s.capabilities().pipelining);  // forgotten
  EXPECT_FALSE(s.capabilities().starttls);
  EXPECT_EQ(s.phase(), SessionPhase::kGreeting);
  EXPECT_EQ(send_all(s), "EHLO localhost\r\n");
  s.receive("250-mx\r\n250 PIPELINING\r\n");
  EXPECT_EQ(s.phase(), SessionPhase::kReady);
  EXPECT_EQ(s.max_queued_transactions(), 2u);
  EXPECT_EQ(send_all(s), "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@x>\r\nDATA\r\n");
  s.tls_established();  // not during a handshake: ignored
  EXPECT_EQ(pending(s), "");
  EXPECT_TRUE(s.secure());
}

TEST(ClientSessionTest, AbortDuringTheHandshake) {
  ClientSession s(tls_options(StartTlsPolicy::kRequired));
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  to_handshake(s);
  s.abort({4, 4, 7}, "timeout during TLS handshake");
  EXPECT_FALSE(s.wants_tls_handshake());
  EXPECT_EQ(s.phase(), SessionPhase::kClosed);
  ASSERT_EQ(s.finished().size(), 1u);
  EXPECT_TRUE(s.finished()[0].not_attempted);
  s.tls_established();  // a late completion changes nothing
  s.tls_failed("late");
  EXPECT_EQ(s.phase(), SessionPhase::kClosed);
  EXPECT_EQ(s.finished().size(), 1u);
  EXPECT_EQ(s.pending_output_bytes(), 0u);
}

TEST(ClientSessionTest, ImplicitTlsIsSecureFromTheStartAndMayFailBeforeTheGreeting) {
  SessionOptions options;
  options.implicit_tls = true;
  options.starttls = StartTlsPolicy::kRequired;
  ClientSession s(options);
  EXPECT_TRUE(s.secure());
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  s.tls_failed("unknown CA");
  EXPECT_EQ(s.phase(), SessionPhase::kClosed);
  ASSERT_EQ(s.finished().size(), 1u);
  EXPECT_TRUE(s.finished()[0].not_attempted);
  EXPECT_EQ(s.finished()[0].recipients[0].reply.enhanced, (EnhancedCode{4, 7, 0}));
  EXPECT_EQ(s.finished()[0].recipients[0].reply.text, "TLS handshake failed: unknown CA");

  ClientSession t(options);  // STARTTLS advertised over implicit TLS is not used
  t.add_transaction(txn(1, {"a@x"}, body("hi")));
  t.receive("220 mx ESMTP\r\n");
  send_all(t);
  t.receive("250-mx\r\n250 STARTTLS\r\n");
  EXPECT_EQ(t.phase(), SessionPhase::kReady);
  EXPECT_EQ(send_all(t), "MAIL FROM:<s@example.org>\r\n");
}

TEST(ClientSessionTest, NoTransactionBeforeAuthCompletes) {
  SessionOptions options;
  options.implicit_tls = true;
  options.auth = AuthCredentials{"u", "p", false};
  ClientSession s(options);
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  s.receive("220 mx ESMTP\r\n");
  send_all(s);
  s.receive("250-mx\r\n250-PIPELINING\r\n250 AUTH LOGIN\r\n");
  EXPECT_EQ(s.phase(), SessionPhase::kGreeting);
  EXPECT_EQ(s.max_queued_transactions(), 1u);
  EXPECT_EQ(send_all(s), "AUTH LOGIN\r\n");
  s.receive("334 VXNlcm5hbWU6\r\n");
  EXPECT_EQ(send_all(s), "dQ==\r\n");
  s.receive("334 UGFzc3dvcmQ6\r\n");
  EXPECT_EQ(send_all(s), "cA==\r\n");
  EXPECT_FALSE(s.authenticated());
  s.receive("235 ok\r\n");
  EXPECT_TRUE(s.authenticated());
  EXPECT_EQ(s.phase(), SessionPhase::kReady);
  EXPECT_EQ(s.max_queued_transactions(), 2u);
  EXPECT_EQ(send_all(s), "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@x>\r\nDATA\r\n");
}

TEST(ClientSessionTest, SentCredentialsAreZeroed) {
  // White-box: a sent segment's slot keeps its buffer (see the header), so the bytes
  // that carried the credentials can be looked at right after mark_sent().
  SessionOptions options;
  options.implicit_tls = true;
  options.auth = AuthCredentials{"alice", "s3cret-Pw", false};
  ClientSession s(options);
  s.add_transaction(txn(1, {"a@x"}, body("hi")));
  s.receive("220 mx ESMTP\r\n");
  send_all(s);
  s.receive("250-mx\r\n250 AUTH PLAIN\r\n");
  std::array<std::string_view, 16> segments;
  ASSERT_EQ(s.pending_output(segments), 1u);
  const std::string_view line = segments[0];
  ASSERT_EQ(line, "AUTH PLAIN AGFsaWNlAHMzY3JldC1Qdw==\r\n");
  s.mark_sent(line.size());
  EXPECT_EQ(line.find("AGFsaWNl"), std::string_view::npos);
  EXPECT_EQ(line.find_first_not_of('\0'), std::string_view::npos);
}

TEST(ClientSessionTest, AuthFailureDefersWithoutBouncing) {
  SessionOptions options;
  options.implicit_tls = true;
  options.auth = AuthCredentials{"alice", "s3cret-Pw", false};
  ClientSession s(options);
  s.add_transaction(txn(1, {"a@x", "b@x"}, body("hi")));
  s.receive("220 mx ESMTP\r\n");
  send_all(s);
  s.receive("250-mx\r\n250 AUTH PLAIN\r\n");
  send_all(s);
  s.receive("535 5.7.8 Error: authentication failed: s3cret-Pw\r\n");
  EXPECT_TRUE(s.auth_failed());
  EXPECT_FALSE(s.authenticated());
  EXPECT_EQ(s.phase(), SessionPhase::kClosed);
  EXPECT_EQ(pending(s), "QUIT\r\n");
  ASSERT_EQ(s.finished().size(), 1u);
  const TransactionOutcome& o = s.finished()[0];
  EXPECT_TRUE(o.not_attempted);
  for (const RecipientOutcome& r : o.recipients) {
    EXPECT_EQ(r.status, RecipientStatus::kDeferred);
    EXPECT_EQ(r.reply.code, 535);
    EXPECT_EQ(r.reply.enhanced, (EnhancedCode{5, 7, 8}));
    EXPECT_EQ(r.reply.text, "Error: authentication failed: <redacted>");
  }
  EXPECT_EQ(s.transactions_completed(), 0u);
}

}  // namespace
}  // namespace ringmail::smtp

// The engine over TLS against real servers on loopback: aiosmtpd with STARTTLS, implicit
// TLS and AUTH, certificates from a CA made at test time; the scripted server for a peer
// that stalls mid-handshake after injecting a line behind its 220.
#include <gtest/gtest.h>

#include <algorithm>

#include "engine/domain_route_resolver.h"
#include "tests/engine/engine_harness.h"
#include "tests/engine/tls_peer_fixture.h"
#include "tests/support/aiosmtpd_server.h"
#include "tests/support/scripted_smtp_server.h"
#include "tests/support/test_ca.h"

namespace ringmail::test {
namespace {

using smtp::RecipientStatus;

class TlsDelivery : public TlsPeerTest {
 protected:
  EngineRun run(engine::EngineOptions o, uint16_t port, size_t count,
                std::string tls_name = "mx.ringmail.test") {
    engine::Destination d{"127.0.0.1", port, tls_name};
    engine::StaticRelayResolver resolver(d);
    return run_with(o, resolver, make_items(count));
  }

  EngineRun run_with(engine::EngineOptions o, engine::RouteResolver& resolver,
                     std::vector<engine::DeliveryItem> items) {
    return run_engine_with(std::move(o), resolver, std::move(items));
  }
};

TEST_F(TlsDelivery, OpportunisticWithoutStarttlsDeliversInPlaintext) {
  auto s = server({});
  ASSERT_TRUE(s);
  auto r = run(options(engine::TlsPolicy::kOpportunistic), s->port(), 5);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 5u);
  EXPECT_EQ(r.outcomes.front().transport_security, "");
  EXPECT_FALSE(s->messages().front().tls);
}

TEST_F(TlsDelivery, RequiredWithoutStarttlsDefersWithTheReason) {
  auto s = server({});
  ASSERT_TRUE(s);
  auto r = run(options(engine::TlsPolicy::kRequired), s->port(), 5);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_deferred, 5u);
  EXPECT_EQ(s->message_count(), 0u);
  auto& reply = r.by_recipient.begin()->second.reply;
  EXPECT_EQ(reply.enhanced.to_string(), "4.7.0") << reply.to_string();
  EXPECT_NE(reply.text.find("TLS"), std::string::npos) << reply.text;
}

TEST_F(TlsDelivery, VerifiedStarttlsDeliversAndRecordsTlsDetails) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kStartTls;
  auto s = server(o);
  ASSERT_TRUE(s);
  auto opts = options(engine::TlsPolicy::kVerify);
  opts.pool.max_recipients_per_transaction = 3;
  auto r = run(opts, s->port(), 30);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 30u);
  ASSERT_EQ(s->message_count(), 10u);  // pipelined transactions over TLS
  EXPECT_TRUE(s->messages().front().tls);
  const std::string& security = r.outcomes.front().transport_security;
  EXPECT_NE(security.find("TLSv1."), std::string::npos) << security;
  EXPECT_NE(security.find(" verified"), std::string::npos) << security;
}

TEST_F(TlsDelivery, VerifyRejectsAWrongHostName) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kStartTls;
  auto s = server(o);
  ASSERT_TRUE(s);
  auto r = run(options(engine::TlsPolicy::kVerify), s->port(), 3, "other.example.test");
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_deferred, 3u);
  EXPECT_EQ(s->message_count(), 0u);
  auto& reply = r.by_recipient.begin()->second.reply;
  EXPECT_EQ(reply.enhanced.klass, 4);
  EXPECT_FALSE(reply.text.empty());
}

TEST_F(TlsDelivery, VerifyRejectsAnUnknownCaButOpportunisticDelivers) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kStartTls;
  auto s = server(o);
  ASSERT_TRUE(s);
  auto other_dir = ScopedTempDir::create("ringmail-tls-other");
  ASSERT_TRUE(other_dir);
  auto other_ca = TestCa::create(other_dir->path(), "mx.ringmail.test", "another CA");
  ASSERT_TRUE(other_ca);
  auto verify = options(engine::TlsPolicy::kVerify);
  verify.security.tls.ca_file = other_ca->ca_pem().string();
  auto refused = run(verify, s->port(), 3);
  ASSERT_TRUE(refused.finished);
  EXPECT_EQ(refused.counts.recipients_deferred, 3u);

  auto opportunistic = options(engine::TlsPolicy::kOpportunistic);
  opportunistic.security.tls.ca_file = other_ca->ca_pem().string();
  auto delivered = run(opportunistic, s->port(), 3);
  ASSERT_TRUE(delivered.finished);
  EXPECT_EQ(delivered.counts.recipients_delivered, 3u);
  EXPECT_NE(delivered.outcomes.front().transport_security.find("unverified"), std::string::npos);
  EXPECT_TRUE(s->messages().front().tls);
}

TEST_F(TlsDelivery, ARoutesOwnPolicyOverridesTheDefault) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kStartTls;
  auto s = server(o);
  ASSERT_TRUE(s);
  // Both routes reach the same server under a name its certificate does not carry: the
  // default (opportunistic) delivers anyway, the route that asks for verify defers.
  engine::Destination lax{"127.0.0.1", s->port(), "other.example.test"};
  engine::Destination strict = lax;
  strict.security_profile = 1;
  auto opts = options(engine::TlsPolicy::kOpportunistic);
  opts.route_security.push_back(opts.security);
  opts.route_security.back().tls.mode = engine::TlsPolicy::kVerify;
  engine::DomainRouteResolver resolver(std::nullopt, {{"lax.test", lax}, {"strict.test", strict}}, 25);
  auto items = make_items(3, 200, "lax.test");
  for (auto& i : make_items(3, 200, "strict.test")) items.push_back(std::move(i));
  auto r = run_with(opts, resolver, std::move(items));
  ASSERT_TRUE(r.finished);
  for (auto& [rcpt, outcome] : r.by_recipient) {
    if (rcpt.ends_with("@lax.test")) EXPECT_EQ(outcome.status, RecipientStatus::kDelivered) << rcpt;
    else EXPECT_EQ(outcome.status, RecipientStatus::kDeferred) << rcpt << " " << outcome.reply.to_string();
  }
  EXPECT_EQ(s->message_count(), 3u);  // lax.test's, one recipient per transaction here
}

TEST_F(TlsDelivery, ARouteWithImplicitTlsAndCredentialsOfItsOwn) {
  // The default is plaintext without AUTH; one route goes to a port-465 style server
  // with its own credentials.
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kImplicit;
  o.auth_user = "route-user";
  o.auth_password = "route-pw";
  o.auth_required = true;
  auto submission = server(o);
  auto plain = server({});
  ASSERT_TRUE(submission && plain);
  auto opts = options(engine::TlsPolicy::kDisabled);
  engine::TransportSecurity route = opts.security;
  route.tls.mode = engine::TlsPolicy::kVerify;
  route.implicit_tls = true;
  route.auth = smtp::AuthCredentials{"route-user", "route-pw", false};
  opts.route_security.push_back(route);
  engine::Destination to_submission{"127.0.0.1", submission->port(), "mx.ringmail.test"};
  to_submission.security_profile = 1;
  engine::Destination to_plain{"127.0.0.1", plain->port()};
  engine::DomainRouteResolver resolver(
      std::nullopt, {{"relayed.test", to_submission}, {"plain.test", to_plain}}, 25);
  auto items = make_items(2, 200, "relayed.test");
  for (auto& i : make_items(2, 200, "plain.test")) items.push_back(std::move(i));
  auto r = run_with(opts, resolver, std::move(items));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 4u);
  ASSERT_EQ(submission->message_count(), 2u);
  EXPECT_TRUE(submission->messages().front().tls);
  EXPECT_EQ(submission->messages().front().auth_user, "route-user");
  ASSERT_EQ(plain->message_count(), 2u);
  EXPECT_FALSE(plain->messages().front().tls);
}

TEST_F(TlsDelivery, ImplicitTlsDelivers) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kImplicit;
  auto s = server(o);
  ASSERT_TRUE(s);
  auto opts = options(engine::TlsPolicy::kVerify);
  opts.security.implicit_tls = true;
  auto r = run(opts, s->port(), 4);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 4u);
  EXPECT_TRUE(s->messages().front().tls);
}

TEST_F(TlsDelivery, SessionsAreResumedWhenThePoolReopensConnections) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kStartTls;
  auto s = server(o);
  ASSERT_TRUE(s);
  auto opts = options(engine::TlsPolicy::kVerify);
  opts.pool.max_connections = 1;
  opts.pool.max_messages_per_connection = 2;
  auto r = run(opts, s->port(), 8);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 8u);
  EXPECT_EQ(r.counts.connections_opened, 4u);
  size_t resumed = 0;
  for (auto& outcome : r.outcomes) resumed += outcome.transport_security.find("resumed") != std::string::npos;
  EXPECT_GE(resumed, 4u);  // the 2nd..4th connections
  EXPECT_EQ(r.counts.tls_handshakes, 4u);
  EXPECT_EQ(r.counts.tls_handshakes_resumed, 3u);
  EXPECT_EQ(r.counts.tls_failures, 0u);
}

TEST_F(TlsDelivery, AuthWithTheRightPasswordDelivers) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kStartTls;
  o.auth_user = "shop";
  o.auth_password = "s3cret-Pa55";
  o.auth_required = true;
  auto s = server(o);
  ASSERT_TRUE(s);
  auto opts = options(engine::TlsPolicy::kRequired);
  opts.security.auth = smtp::AuthCredentials{"shop", "s3cret-Pa55", false};
  auto r = run(opts, s->port(), 3);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 3u);
  EXPECT_EQ(s->messages().front().auth_user, "shop");
}

TEST_F(TlsDelivery, WrongPasswordStopsTheRouteWithoutARetryStorm) {
  AiosmtpdOptions o;
  o.tls = AiosmtpdOptions::Tls::kStartTls;
  o.auth_user = "shop";
  o.auth_password = "right";
  o.auth_required = true;
  auto s = server(o);
  ASSERT_TRUE(s);
  auto opts = options(engine::TlsPolicy::kRequired);
  opts.security.auth = smtp::AuthCredentials{"shop", "wrong-password", false};
  auto r = run(opts, s->port(), 200);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_deferred, 200u);
  // Only the connections already opening when the first 535 came back try at all.
  EXPECT_LE(s->auth_attempts().size(), size_t(opts.pool.max_connections));
  EXPECT_LE(r.counts.connections_opened, uint64_t(opts.pool.max_connections));
  auto& reply = r.by_recipient.begin()->second.reply;
  EXPECT_EQ(reply.code, 535) << reply.to_string();
  for (auto& [rcpt, outcome] : r.by_recipient)
    EXPECT_EQ(outcome.reply.text.find("wrong-password"), std::string::npos);
}

TEST_F(TlsDelivery, CredentialsAreNotSentInPlaintextUnlessAllowed) {
  AiosmtpdOptions o;
  o.auth_user = "shop";
  o.auth_password = "pw";
  o.auth_allow_plaintext = true;
  auto s = server(o);
  ASSERT_TRUE(s);
  auto opts = options(engine::TlsPolicy::kDisabled);
  opts.security.auth = smtp::AuthCredentials{"shop", "pw", false};
  auto refused = run(opts, s->port(), 2);
  ASSERT_TRUE(refused.finished);
  EXPECT_EQ(refused.counts.recipients_deferred, 2u);
  EXPECT_TRUE(s->auth_attempts().empty());

  opts.security.auth->allow_plaintext = true;
  auto allowed = run(opts, s->port(), 2);
  ASSERT_TRUE(allowed.finished);
  EXPECT_EQ(allowed.counts.recipients_delivered, 2u);
}

TEST_F(TlsDelivery, ServerStallingMidHandshakeTimesOutAndInjectionIsIgnored) {
  ScriptedSmtpServerOptions o;
  o.extensions.push_back("STARTTLS");
  o.script = [](const ScriptedCommand& c) -> std::optional<ScriptedReply> {
    // The 220 with a forged reply behind it in the same packet, then silence.
    if (c.verb == "STARTTLS") return ScriptedReply{"220 ready\r\n250 injected\r\n"};
    return std::nullopt;
  };
  auto s = ScriptedSmtpServer::start(o);
  ASSERT_TRUE(s) << s.error();
  auto opts = options(engine::TlsPolicy::kRequired);
  opts.timeouts.command = engine::Seconds(0.5);
  auto started = std::chrono::steady_clock::now();
  auto r = run(opts, (*s)->port(), 3);
  ASSERT_TRUE(r.finished);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(15));
  EXPECT_EQ(r.counts.recipients_deferred, 3u);
  EXPECT_TRUE((*s)->messages().empty());
  // After STARTTLS only the TLS ClientHello went out: no SMTP command in plaintext, and
  // the injected "250" behind the 220 was not taken for the reply to anything.
  for (auto& t : (*s)->transcripts()) {
    auto starttls = std::find(t.commands.begin(), t.commands.end(), "STARTTLS");
    ASSERT_NE(starttls, t.commands.end());
    for (auto it = starttls + 1; it != t.commands.end(); ++it)
      for (const char* verb : {"EHLO", "MAIL", "RCPT", "DATA", "QUIT", "RSET"})
        EXPECT_NE(it->rfind(verb, 0), 0u) << *it;
  }
}

}  // namespace
}  // namespace ringmail::test

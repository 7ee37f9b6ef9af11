// Pins AiosmtpdServer against an independent client (Python's smtplib under
// /usr/bin/python3): STARTTLS with AUTH, implicit TLS, plaintext; what is recorded.
#include "tests/support/aiosmtpd_server.h"

#include <gtest/gtest.h>

#include <optional>

#include "tests/support/run_command.h"
#include "tests/support/test_ca.h"

namespace ringmail::test {
namespace {

using namespace std::chrono_literals;

// argv: port mode(starttls|implicit|plain) cafile host. Prints one line per step; every
// network operation has a 10 s timeout, and run_command bounds the whole run.
constexpr const char* kClient = R"PY(
import smtplib, socket, ssl, sys
port, mode, cafile, host = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def step(name, value):
    print(name, value, flush=True)
class LoopbackSsl(smtplib.SMTP_SSL):
    # Connect to 127.0.0.1 but check the certificate for `host` (no DNS for it).
    def _get_socket(self, _host, port, timeout):
        sock = socket.create_connection(("127.0.0.1", port), timeout)
        return self.context.wrap_socket(sock, server_hostname=host)
if mode == "implicit":
    ctx = ssl.create_default_context(cafile=cafile)
    s = LoopbackSsl(host, port, timeout=10, context=ctx)
else:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s._host = host
code, text = s.ehlo("client.test")
step("ehlo", code)
step("offers-starttls", s.has_extn("starttls"))
step("offers-auth", s.has_extn("auth"))
step("offers-pipelining", s.has_extn("pipelining"))
step("mail-before-auth", s.mail("early@test")[0])
s.rset()
if mode == "plain":
    step("auth-plaintext", s.docmd("AUTH", "PLAIN AHVzZXIAc2VjcmV0")[0])
if mode == "starttls":
    # The certificate must verify for `host` (server_hostname), from our CA only.
    ctx = ssl.create_default_context(cafile=cafile)
    step("starttls", s.starttls(context=ctx)[0])
    s.ehlo("client.test")
    step("offers-auth-after-tls", s.has_extn("auth"))
if mode != "plain":
    try:
        s.login("user", "wrong")
        step("bad-login", "accepted")
    except smtplib.SMTPAuthenticationError as e:
        step("bad-login", e.smtp_code)
    s.login("user", "secret")
    step("login", "ok")
refused = s.sendmail("from@test", ["to1@test", "to2@test"],
                     b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n")
step("refused", len(refused))
step("quit", s.quit()[0])
)PY";

class AiosmtpdServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = ScopedTempDir::create("ringmail-aiosmtpd-test");
    ASSERT_TRUE(dir) << dir.error();
    dir_.emplace(std::move(*dir));
    auto ca = TestCa::create(dir_->path(), "mx.ringmail.test");
    ASSERT_TRUE(ca) << ca.error();
    ca_.emplace(std::move(*ca));
  }

  std::unique_ptr<AiosmtpdServer> start(AiosmtpdOptions options) {
    auto server = AiosmtpdServer::start(std::move(options));
    EXPECT_TRUE(server) << server.error();
    return server ? std::move(*server) : nullptr;
  }

  std::string run_client(const AiosmtpdServer& server, const char* mode) {
    auto result =
        run_command({"/usr/bin/python3", "-I", "-c", kClient, std::to_string(server.port()), mode,
                     ca_->ca_pem().string(), "mx.ringmail.test"},
                    30s);
    EXPECT_TRUE(result) << result.error();
    if (!result) return {};
    EXPECT_FALSE(result->timed_out);
    EXPECT_EQ(result->exit_code, 0) << result->output;
    return result->output;
  }

  AiosmtpdOptions tls_options(AiosmtpdOptions::Tls tls) {
    return {.tls = tls,
            .cert_file = ca_->server_cert(),
            .key_file = ca_->server_key(),
            .auth_user = "user",
            .auth_password = "secret",
            .auth_required = true};
  }

  std::optional<ScopedTempDir> dir_;
  std::optional<TestCa> ca_;
};

// smtplib connects to 127.0.0.1 but checks the certificate for "mx.ringmail.test": the
// test CA's server certificate carries both names.
TEST_F(AiosmtpdServerTest, StartTlsWithRequiredAuth) {
  auto server = start(tls_options(AiosmtpdOptions::Tls::kStartTls));
  ASSERT_TRUE(server);
  const std::string out = run_client(*server, "starttls");
  EXPECT_NE(out.find("ehlo 250\n"), std::string::npos) << out;
  EXPECT_NE(out.find("offers-starttls True\n"), std::string::npos) << out;
  EXPECT_NE(out.find("offers-auth False\n"), std::string::npos) << out;  // not before TLS
  EXPECT_NE(out.find("offers-pipelining True\n"), std::string::npos) << out;
  EXPECT_NE(out.find("mail-before-auth 530\n"), std::string::npos) << out;
  EXPECT_NE(out.find("starttls 220\n"), std::string::npos) << out;
  EXPECT_NE(out.find("offers-auth-after-tls True\n"), std::string::npos) << out;
  EXPECT_NE(out.find("bad-login 535\n"), std::string::npos) << out;
  EXPECT_NE(out.find("login ok\n"), std::string::npos) << out;
  EXPECT_NE(out.find("refused 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("quit 221\n"), std::string::npos) << out;

  auto messages = server->messages();
  ASSERT_EQ(messages.size(), 1u) << server->stderr_text();
  EXPECT_EQ(server->message_count(), 1u);
  const AiosmtpdMessage& m = messages[0];
  EXPECT_EQ(m.helo, "client.test");
  EXPECT_EQ(m.mail_from, "from@test");
  EXPECT_EQ(m.rcpt_to, (std::vector<std::string>{"to1@test", "to2@test"}));
  EXPECT_EQ(m.content, "Subject: hi\r\n\r\n.leading dot\r\nbody\r\n");
  EXPECT_TRUE(m.tls);
  EXPECT_EQ(m.tls_version, "TLSv1.3");
  EXPECT_FALSE(m.cipher.empty());
  EXPECT_EQ(m.auth_user, "user");

  // smtplib tries PLAIN, then LOGIN, with the wrong password, then PLAIN again.
  auto attempts = server->auth_attempts();
  ASSERT_GE(attempts.size(), 2u);
  EXPECT_FALSE(attempts.front().success);
  EXPECT_TRUE(attempts.back().success);
  EXPECT_EQ(attempts.back().user, "user");
  EXPECT_TRUE(attempts.back().tls);
}

TEST_F(AiosmtpdServerTest, ImplicitTlsWithAuth) {
  auto server = start(tls_options(AiosmtpdOptions::Tls::kImplicit));
  ASSERT_TRUE(server);
  const std::string out = run_client(*server, "implicit");
  EXPECT_NE(out.find("offers-starttls False\n"), std::string::npos) << out;
  // aiosmtpd cannot tell that an implicit-TLS session is TLS; the wrapper lets AUTH in.
  EXPECT_NE(out.find("offers-auth True\n"), std::string::npos) << out;
  EXPECT_NE(out.find("login ok\n"), std::string::npos) << out;
  auto messages = server->messages();
  ASSERT_EQ(messages.size(), 1u) << server->stderr_text();
  EXPECT_TRUE(messages[0].tls);
  EXPECT_EQ(messages[0].auth_user, "user");
}

TEST_F(AiosmtpdServerTest, PlaintextRefusesAuthUnlessAllowed) {
  AiosmtpdOptions options = tls_options(AiosmtpdOptions::Tls::kNone);
  options.auth_required = false;
  auto server = start(options);
  ASSERT_TRUE(server);
  const std::string out = run_client(*server, "plain");
  EXPECT_NE(out.find("offers-auth False\n"), std::string::npos) << out;
  EXPECT_NE(out.find("mail-before-auth 250\n"), std::string::npos) << out;
  EXPECT_NE(out.find("auth-plaintext 538\n"), std::string::npos) << out;
  auto messages = server->messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_FALSE(messages[0].tls);
  EXPECT_EQ(messages[0].auth_user, "");
}

TEST_F(AiosmtpdServerTest, StopsPromptlyAndReportsStartFailures) {
  auto server = start(tls_options(AiosmtpdOptions::Tls::kStartTls));
  ASSERT_TRUE(server);
  EXPECT_TRUE(server->running());
  const pid_t pid = server->pid();
  const auto before = std::chrono::steady_clock::now();
  server.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - before, 3s);
  EXPECT_NE(::kill(pid, 0), 0);  // reaped: the pid is gone

  AiosmtpdOptions bad = tls_options(AiosmtpdOptions::Tls::kStartTls);
  bad.cert_file = "/nonexistent.pem";
  auto failed = AiosmtpdServer::start(bad);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().find("exited at start-up"), std::string::npos) << failed.error();
}

}  // namespace
}  // namespace ringmail::test

// TlsEngine against a real, independent TLS stack (Python's ssl in aiosmtpd) over a
// loopback socket: STARTTLS and implicit TLS, AUTH PLAIN, pipelined commands, resumption.
// The socket I/O here is blocking and bounded; the engine is driven in the same order a
// ring connection drives it (feed, handshake or read, take and send).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>

#include "engine/tls_engine.h"
#include "tests/support/aiosmtpd_server.h"
#include "tests/support/test_ca.h"

namespace ringmail::engine {
namespace {

using test::AiosmtpdOptions;
using test::AiosmtpdServer;
using test::ScopedTempDir;
using test::TestCa;

constexpr int kIoTimeoutMs = 5000;

class Socket {
 public:
  explicit Socket(uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~Socket() { ::close(fd_); }
  bool connected() const { return connected_; }
  bool send_all(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(size_t(n));
    }
    return true;
  }
  // Appends what one recv returns; false on timeout, EOF or error.
  bool receive(std::string& out) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, kIoTimeoutMs) != 1) return false;
    char buf[16384];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    out.append(buf, size_t(n));
    return true;
  }

 private:
  int fd_;
  bool connected_ = false;
};

// Plaintext SMTP until a complete reply (last line "ddd ") is buffered.
std::string read_plain_reply(Socket& socket) {
  std::string in;
  for (;;) {
    size_t line_start = 0;
    for (size_t end; (end = in.find("\r\n", line_start)) != std::string::npos; line_start = end + 2)
      if (end - line_start >= 4 && in[line_start + 3] == ' ') return in.substr(0, end + 2);
    if (!socket.receive(in)) return in;
  }
}

class TlsConnection {
 public:
  TlsConnection(Socket& socket, TlsEngine engine) : socket_(socket), engine_(std::move(engine)) {}

  bool flush() {
    out_.clear();  // the previous send has completed (blocking)
    engine_.take_ciphertext(out_);
    return socket_.send_all(out_);
  }
  HandshakeStatus handshake() {
    for (;;) {
      HandshakeStatus status = engine_.handshake();
      if (!flush()) return HandshakeStatus::kFailed;
      if (status != HandshakeStatus::kWantIo) return status;
      std::string in;
      if (!socket_.receive(in)) return HandshakeStatus::kWantIo;  // the caller's timeout
      engine_.feed_ciphertext(in);
    }
  }
  bool write(std::vector<std::string_view> segments) {
    while (!segments.empty()) {
      auto n = engine_.write_plaintext(segments);
      if (!n) return false;
      size_t left = *n;
      while (!segments.empty() && left >= segments.front().size()) {
        left -= segments.front().size();
        segments.erase(segments.begin());
      }
      if (!segments.empty()) segments.front().remove_prefix(left);
      if (!flush()) return false;
    }
    return true;
  }
  // Reads until `count` complete replies are buffered; returns them all.
  std::string read_replies(size_t count = 1) {
    for (;;) {
      size_t replies = 0, line_start = 0;
      for (size_t end; (end = plain_.find("\r\n", line_start)) != std::string::npos;
           line_start = end + 2)
        if (end - line_start >= 4 && plain_[line_start + 3] == ' ' && ++replies == count) {
          std::string out = plain_.substr(0, end + 2);
          plain_.erase(0, end + 2);
          return out;
        }
      std::string in;
      if (!socket_.receive(in)) return "timeout/EOF after: " + plain_;
      engine_.feed_ciphertext(in);
      auto n = engine_.read_plaintext(plain_);
      if (!n) return "read error: " + n.error();
      flush();  // a read may produce ciphertext (key update)
    }
  }
  TlsEngine& engine() { return engine_; }

 private:
  Socket& socket_;
  TlsEngine engine_;
  std::string out_;
  std::string plain_;
};

class TlsEnginePeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = ScopedTempDir::create("ringmail-tls-peer");
    ASSERT_TRUE(dir) << dir.error();
    dir_.emplace(std::move(*dir));
    auto ca = TestCa::create(dir_->path(), "mx.ringmail.test");
    ASSERT_TRUE(ca) << ca.error();
    ca_.emplace(std::move(*ca));
    auto ctx =
        TlsClientContext::create({.mode = TlsPolicy::kVerify, .ca_file = ca_->ca_pem().string()});
    ASSERT_TRUE(ctx) << ctx.error();
    ctx_.emplace(std::move(*ctx));
  }
  std::unique_ptr<AiosmtpdServer> start(AiosmtpdOptions::Tls tls) {
    auto server = AiosmtpdServer::start({.tls = tls,
                                         .cert_file = ca_->server_cert(),
                                         .key_file = ca_->server_key(),
                                         .auth_user = "user",
                                         .auth_password = "secret",
                                         .auth_required = true});
    EXPECT_TRUE(server) << server.error();
    return server ? std::move(*server) : nullptr;
  }
  // After the TLS handshake: EHLO, AUTH PLAIN, one pipelined transaction, QUIT.
  void run_session(TlsConnection& tls, bool expect_greeting) {
    if (expect_greeting) {
      EXPECT_EQ(tls.read_replies().substr(0, 4), "220 ");
    }
    ASSERT_TRUE(tls.write({"EHLO client.test\r\n"}));
    std::string ehlo = tls.read_replies();
    EXPECT_NE(ehlo.find("AUTH LOGIN PLAIN"), std::string::npos) << ehlo;
    EXPECT_EQ(ehlo.find("STARTTLS"), std::string::npos) << ehlo;
    ASSERT_TRUE(tls.write({"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"}));  // \0user\0secret
    EXPECT_EQ(tls.read_replies().substr(0, 4), "235 ");
    ASSERT_TRUE(tls.write({"MAIL FROM:<a@test>\r\n", "RCPT TO:<b@test>\r\n", "DATA\r\n"}));
    std::string replies = tls.read_replies(3);
    EXPECT_NE(replies.find("354"), std::string::npos) << replies;
    ASSERT_TRUE(tls.write({"Subject: t\r\n\r\nhello over TLS\r\n.\r\n", "QUIT\r\n"}));
    replies = tls.read_replies(2);
    EXPECT_NE(replies.find("250 2.0.0 OK queued"), std::string::npos) << replies;
    EXPECT_NE(replies.find("221"), std::string::npos) << replies;
    tls.engine().shutdown();
    tls.flush();
  }

  std::optional<ScopedTempDir> dir_;
  std::optional<TestCa> ca_;
  std::optional<TlsClientContext> ctx_;
};

TEST_F(TlsEnginePeerTest, ImplicitTlsWithAuthAndResumption) {
  auto server = start(AiosmtpdOptions::Tls::kImplicit);
  ASSERT_TRUE(server);
  for (int i = 0; i < 2; ++i) {
    Socket socket(server->port());
    ASSERT_TRUE(socket.connected());
    auto engine = TlsEngine::create(*ctx_, "mx.ringmail.test", "aiosmtpd:465");
    ASSERT_TRUE(engine) << engine.error();
    TlsConnection tls(socket, std::move(*engine));
    ASSERT_EQ(tls.handshake(), HandshakeStatus::kDone) << tls.engine().error();
    run_session(tls, true);
    TlsInfo info = tls.engine().info();
    EXPECT_TRUE(info.verified) << info.verify_error;
    EXPECT_EQ(info.version, "TLSv1.3");
    EXPECT_EQ(info.resumed, i == 1) << "connection " << i;
  }
  auto messages = server->messages();
  ASSERT_EQ(messages.size(), 2u) << server->stderr_text();
  EXPECT_TRUE(messages[1].tls);
  EXPECT_EQ(messages[1].auth_user, "user");
  EXPECT_EQ(messages[1].content, "Subject: t\r\n\r\nhello over TLS\r\n");
}

TEST_F(TlsEnginePeerTest, StartTlsWithAuth) {
  auto server = start(AiosmtpdOptions::Tls::kStartTls);
  ASSERT_TRUE(server);
  Socket socket(server->port());
  ASSERT_TRUE(socket.connected());
  EXPECT_EQ(read_plain_reply(socket).substr(0, 4), "220 ");
  ASSERT_TRUE(socket.send_all("EHLO client.test\r\n"));
  EXPECT_NE(read_plain_reply(socket).find("STARTTLS"), std::string::npos);
  ASSERT_TRUE(socket.send_all("STARTTLS\r\n"));
  EXPECT_EQ(read_plain_reply(socket).substr(0, 4), "220 ");
  auto engine = TlsEngine::create(*ctx_, "mx.ringmail.test", "aiosmtpd:25");
  ASSERT_TRUE(engine) << engine.error();
  TlsConnection tls(socket, std::move(*engine));
  ASSERT_EQ(tls.handshake(), HandshakeStatus::kDone) << tls.engine().error();
  run_session(tls, false);
  EXPECT_TRUE(tls.engine().info().verified);
  ASSERT_EQ(server->message_count(), 1u) << server->stderr_text();
  EXPECT_TRUE(server->messages()[0].tls);
}

TEST_F(TlsEnginePeerTest, VerifyFailsAgainstTheRealServerWithAWrongName) {
  auto server = start(AiosmtpdOptions::Tls::kImplicit);
  ASSERT_TRUE(server);
  Socket socket(server->port());
  ASSERT_TRUE(socket.connected());
  auto engine = TlsEngine::create(*ctx_, "wrong.example", "");
  ASSERT_TRUE(engine) << engine.error();
  TlsConnection tls(socket, std::move(*engine));
  ASSERT_EQ(tls.handshake(), HandshakeStatus::kFailed);
  EXPECT_NE(tls.engine().error().find("hostname mismatch"), std::string::npos)
      << tls.engine().error();
}

}  // namespace
}  // namespace ringmail::engine

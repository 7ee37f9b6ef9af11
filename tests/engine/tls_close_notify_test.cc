// The engine ends its side of a TLS session with a close_notify before closing the socket
// (RFC 8446 §6.1), seen by a real OpenSSL server on loopback that tells a close_notify
// from a bare TCP close (a truncation, to it).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "tests/engine/engine_harness.h"
#include "tests/support/test_ca.h"

namespace ringmail::test {
namespace {

// How the client ended the one session the server accepts.
enum class ClientEnding { kUnknown, kCloseNotify, kTcpCloseOnly };

// Implicit TLS (port 465 style), one connection, blocking I/O on its own thread: enough
// SMTP for pipelined transactions, then after the 221 it reads on to see how the client
// ends the TLS session. Every wait is bounded by a 10 s receive timeout.
class TlsSmtpServer {
 public:
  TlsSmtpServer(const TestCa& ca) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    EXPECT_EQ(SSL_CTX_use_certificate_file(ctx_, ca.server_cert().c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx_, ca.server_key().c_str(), SSL_FILETYPE_PEM), 1);
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    socklen_t length = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~TlsSmtpServer() {
    if (thread_.joinable()) thread_.join();
    ::close(listen_fd_);
    SSL_CTX_free(ctx_);
  }
  uint16_t port() const { return port_; }
  // Waits for the server's side of the connection to end: the engine having finished
  // only means the client closed, and the server thread may not have read that yet.
  ClientEnding ending() {
    if (thread_.joinable()) thread_.join();
    return ending_.load();
  }
  size_t messages() const { return messages_.load(); }

 private:
  void serve() {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    timeval timeout{.tv_sec = 10, .tv_usec = 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1 && converse(ssl)) {
      // After the 221: a close_notify reads as a clean end of the TLS stream; a TCP close
      // without one is an unexpected EOF.
      char byte;
      const int n = SSL_read(ssl, &byte, 1);
      const int error = SSL_get_error(ssl, n);
      ending_ = n <= 0 && error == SSL_ERROR_ZERO_RETURN ? ClientEnding::kCloseNotify
                                                         : ClientEnding::kTcpCloseOnly;
    }
    SSL_free(ssl);
    ::close(fd);
  }

  // Until QUIT has been answered; false when the connection broke first.
  bool converse(SSL* ssl) {
    auto say = [ssl](std::string_view reply) {
      return SSL_write(ssl, reply.data(), int(reply.size())) == int(reply.size());
    };
    if (!say("220 tls.test ESMTP\r\n")) return false;
    std::string buffer;
    bool in_data = false;
    char chunk[4096];
    while (true) {
      size_t end;
      while ((end = buffer.find("\r\n")) != std::string::npos) {
        const std::string line = buffer.substr(0, end);
        buffer.erase(0, end + 2);
        if (in_data) {
          if (line == ".") {
            in_data = false;
            ++messages_;
            if (!say("250 2.0.0 queued\r\n")) return false;
          }
          continue;
        }
        const std::string verb = line.substr(0, 4);
        if (verb == "EHLO") {
          if (!say("250-tls.test\r\n250 PIPELINING\r\n")) return false;
        } else if (verb == "DATA") {
          in_data = true;
          if (!say("354 go ahead\r\n")) return false;
        } else if (verb == "QUIT") {
          return say("221 2.0.0 bye\r\n");
        } else if (!say("250 2.0.0 ok\r\n")) {
          return false;
        }
      }
      const int n = SSL_read(ssl, chunk, sizeof chunk);
      if (n <= 0) return false;
      buffer.append(chunk, size_t(n));
    }
  }

  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<ClientEnding> ending_{ClientEnding::kUnknown};
  std::atomic<size_t> messages_{0};
};

TEST(TlsCloseNotify, SentAfterQuitBeforeTheSocketIsClosed) {
  auto dir = ScopedTempDir::create("ringmail-close-notify");
  ASSERT_TRUE(dir) << dir.error();
  auto ca = TestCa::create(dir->path());
  ASSERT_TRUE(ca) << ca.error();
  TlsSmtpServer server(*ca);
  auto options = test_options();
  options.pool.max_connections = 1;
  options.security.implicit_tls = true;
  options.security.tls.mode = engine::TlsPolicy::kVerify;
  options.security.tls.ca_file = ca->ca_pem().string();
  // The certificate names 127.0.0.1 too, so the relay's address verifies.
  auto run = run_engine(options, "127.0.0.1", server.port(), make_items(3), std::chrono::seconds(30));
  ASSERT_TRUE(run.finished);
  EXPECT_EQ(run.counts.recipients_delivered, 3u);
  EXPECT_EQ(run.counts.tls_handshakes, 1u);
  EXPECT_EQ(server.messages(), 3u);
  EXPECT_EQ(server.ending(), ClientEnding::kCloseNotify);
}

}  // namespace
}  // namespace ringmail::test

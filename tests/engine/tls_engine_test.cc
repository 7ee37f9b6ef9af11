// TlsEngine and TlsClientContext against an in-memory OpenSSL server: both sides pumped
// against each other, ciphertext handed over in small chunks, certificates made at test
// time by TestCa.
#include "engine/tls_engine.h"

#include <gtest/gtest.h>
#include <openssl/err.h>

#include <memory>
#include <optional>

#include "tests/support/test_ca.h"

namespace ringmail::engine {
namespace {

using test::ScopedTempDir;
using test::TestCa;

constexpr std::string_view kHost = "mx.ringmail.test";

struct SslCtxDeleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslDeleter {
  void operator()(SSL* s) const { SSL_free(s); }
};

// Shared by every test: making keys and certificates costs a few openssl runs.
struct Pki {
  std::optional<ScopedTempDir> dir;
  std::optional<TestCa> ca;     // the CA clients are told to trust
  std::optional<TestCa> other;  // an unknown CA: its server certificate does not verify
};
Pki* pki = nullptr;

class TlsEngineTest : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    pki = new Pki;
    auto dir = ScopedTempDir::create("ringmail-tls-test");
    ASSERT_TRUE(dir) << dir.error();
    pki->dir.emplace(std::move(*dir));
    std::filesystem::create_directory(pki->dir->path() / "good");
    std::filesystem::create_directory(pki->dir->path() / "other");
    auto ca = TestCa::create(pki->dir->path() / "good", kHost);
    ASSERT_TRUE(ca) << ca.error();
    pki->ca.emplace(std::move(*ca));
    auto other = TestCa::create(pki->dir->path() / "other", kHost, "unknown test CA");
    ASSERT_TRUE(other) << other.error();
    pki->other.emplace(std::move(*other));
  }
  static void TearDownTestSuite() {
    delete pki;
    pki = nullptr;
  }

 protected:
  void SetUp() override { ASSERT_TRUE(pki && pki->ca && pki->other); }

  static std::unique_ptr<SSL_CTX, SslCtxDeleter> server_ctx(const TestCa& ca, int max_version = 0) {
    std::unique_ptr<SSL_CTX, SslCtxDeleter> ctx(SSL_CTX_new(TLS_server_method()));
    EXPECT_TRUE(ctx);
    EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx.get(), ca.server_cert().c_str()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx.get(), ca.server_key().c_str(), SSL_FILETYPE_PEM), 1);
    static const unsigned char kSessionContext[] = "ringmail-test";
    SSL_CTX_set_session_id_context(ctx.get(), kSessionContext, sizeof kSessionContext - 1);
    if (max_version != 0) SSL_CTX_set_max_proto_version(ctx.get(), max_version);
    return ctx;
  }

  static TlsClientContext client_ctx(TlsPolicy::Mode mode, const std::string& ca_file) {
    auto ctx = TlsClientContext::create(TlsPolicy{.mode = mode, .ca_file = ca_file});
    EXPECT_TRUE(ctx) << ctx.error();
    return std::move(*ctx);
  }
  static TlsClientContext trusting_ctx(TlsPolicy::Mode mode = TlsPolicy::kVerify) {
    return client_ctx(mode, pki->ca->ca_pem().string());
  }
  static TlsEngine engine(TlsClientContext& ctx, std::string_view name = kHost,
                          std::string_view key = "mx.ringmail.test:25") {
    auto e = TlsEngine::create(ctx, name, key);
    EXPECT_TRUE(e) << e.error();
    return std::move(*e);
  }
};

// The server end: an OpenSSL server over two memory BIOs, driven by the test.
class MemoryServer {
 public:
  explicit MemoryServer(SSL_CTX* ctx) : ssl_(SSL_new(ctx)) {
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rbio_, -1);
    BIO_set_mem_eof_return(wbio_, -1);
    SSL_set_bio(ssl_.get(), rbio_, wbio_);
    SSL_set_accept_state(ssl_.get());
  }
  void feed(std::string_view bytes) { BIO_write(rbio_, bytes.data(), int(bytes.size())); }
  // Handshake or read, whatever is due; false once the server failed.
  bool step() {
    if (!done_) {
      int r = SSL_do_handshake(ssl_.get());
      if (r == 1) {
        done_ = true;
      } else {
        int e = SSL_get_error(ssl_.get(), r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          failed_ = true;
          ERR_clear_error();
          return false;
        }
        return true;
      }
    }
    char buf[4096];
    size_t n = 0;
    while (SSL_read_ex(ssl_.get(), buf, sizeof buf, &n) == 1) received_.append(buf, n);
    ERR_clear_error();
    return true;
  }
  std::string take() {
    std::string out(BIO_ctrl_pending(wbio_), '\0');
    if (!out.empty()) BIO_read(wbio_, out.data(), int(out.size()));
    return out;
  }
  void write(std::string_view plaintext) {
    size_t written = 0;
    ASSERT_EQ(SSL_write_ex(ssl_.get(), plaintext.data(), plaintext.size(), &written), 1);
  }
  void close_notify() { SSL_shutdown(ssl_.get()); }
  bool done() const { return done_; }
  bool failed() const { return failed_; }
  std::string& received() { return received_; }
  SSL* ssl() { return ssl_.get(); }

 private:
  std::unique_ptr<SSL, SslDeleter> ssl_;
  BIO* rbio_;
  BIO* wbio_;
  bool done_ = false;
  bool failed_ = false;
  std::string received_;
};

struct PumpResult {
  HandshakeStatus status = HandshakeStatus::kWantIo;
  std::string client_plaintext;
  std::string read_error;
};

// Moves ciphertext both ways, `chunk` bytes at a time, until neither side has anything to
// say. The client is driven the way a connection drives it: feed, then handshake or read.
PumpResult pump(TlsEngine& client, MemoryServer& server, size_t chunk) {
  PumpResult result;
  std::string to_server;
  for (int round = 0; round < 10000; ++round) {
    if (!client.handshake_done()) result.status = client.handshake();
    to_server.clear();
    client.take_ciphertext(to_server);
    for (size_t at = 0; at < to_server.size(); at += chunk) {
      server.feed(std::string_view(to_server).substr(at, chunk));
      server.step();
    }
    const std::string to_client = server.take();
    for (size_t at = 0; at < to_client.size(); at += chunk) {
      const std::string_view piece = std::string_view(to_client).substr(at, chunk);
      client.feed_ciphertext(piece);
      if (!client.handshake_done()) {
        result.status = client.handshake();
        if (result.status == HandshakeStatus::kFailed) break;
      } else {
        auto n = client.read_plaintext(result.client_plaintext);
        if (!n) {
          result.read_error = n.error();
          return result;
        }
      }
    }
    if (client.handshake_done()) result.status = HandshakeStatus::kDone;
    if (result.status == HandshakeStatus::kFailed) {
      // Deliver the alert, as the connection would before closing.
      to_server.clear();
      client.take_ciphertext(to_server);
      server.feed(to_server);
      server.step();
      return result;
    }
    if (to_server.empty() && to_client.empty()) break;
  }
  return result;
}

std::string pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char('a' + (i * 7 + size_t(seed)) % 26);
  return s;
}

// Writes all of `segments` through the engine, pumping as the bound requires.
void write_all(TlsEngine& client, MemoryServer& server, std::vector<std::string_view> segments,
               size_t chunk) {
  size_t rounds = 0;
  while (!segments.empty()) {
    auto consumed = client.write_plaintext(segments);
    ASSERT_TRUE(consumed) << consumed.error();
    EXPECT_LE(client.pending_ciphertext(), TlsEngine::kMaxPendingCiphertext + 17 * 1024);
    size_t left = *consumed;
    while (!segments.empty() && left >= segments.front().size()) {
      left -= segments.front().size();
      segments.erase(segments.begin());
    }
    if (!segments.empty()) segments.front().remove_prefix(left);
    pump(client, server, chunk);
    ASSERT_LT(++rounds, 1000u);
  }
}

class TlsEngineChunks : public TlsEngineTest, public ::testing::WithParamInterface<size_t> {};

TEST_P(TlsEngineChunks, VerifiedHandshakeAndDataBothWays) {
  const size_t chunk = GetParam();
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto client = engine(cctx);
  MemoryServer server(sctx.get());

  auto r = pump(client, server, chunk);
  ASSERT_EQ(r.status, HandshakeStatus::kDone) << client.error();
  ASSERT_TRUE(server.done());
  TlsInfo info = client.info();
  EXPECT_EQ(info.version, "TLSv1.3");
  EXPECT_FALSE(info.cipher.empty());
  EXPECT_TRUE(info.verified) << info.verify_error;
  EXPECT_EQ(info.verify_error, "");
  EXPECT_FALSE(info.resumed);

  // Client to server: small pipelined commands and a body larger than the pending bound.
  const std::string body = pattern(700 * 1024, 1);
  write_all(client, server, {"EHLO client.test\r\n", "MAIL FROM:<a@b>\r\n", body, ".\r\n"}, chunk);
  EXPECT_EQ(server.received(), "EHLO client.test\r\nMAIL FROM:<a@b>\r\n" + body + ".\r\n");

  // Server to client.
  const std::string reply = "250-mx.ringmail.test\r\n" + pattern(50 * 1024, 2) + "250 OK\r\n";
  server.write(reply);
  r = pump(client, server, chunk);
  EXPECT_EQ(r.read_error, "");
  EXPECT_EQ(r.client_plaintext, reply);

  // close_notify from the server: data before it still arrives, then peer_closed().
  server.write("221 bye\r\n");
  server.close_notify();
  r = pump(client, server, chunk);
  EXPECT_EQ(r.client_plaintext, "221 bye\r\n");
  EXPECT_TRUE(client.peer_closed());
  std::string more;
  EXPECT_EQ(client.read_plaintext(more).value_or(99), 0u);
}

INSTANTIATE_TEST_SUITE_P(Chunks, TlsEngineChunks, ::testing::Values(1, 7, 100, 1 << 20));

TEST_F(TlsEngineTest, VerifiesAnIpAddressWithoutSni) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto client = engine(cctx, "127.0.0.1");
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone) << client.error();
  EXPECT_TRUE(client.info().verified);
  EXPECT_EQ(SSL_get_servername(server.ssl(), TLSEXT_NAMETYPE_host_name), nullptr);
}

TEST_F(TlsEngineTest, SendsSniAndAcceptsATrailingDot) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto client = engine(cctx, "mx.ringmail.test.");
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone) << client.error();
  EXPECT_STREQ(SSL_get_servername(server.ssl(), TLSEXT_NAMETYPE_host_name), "mx.ringmail.test");
}

TEST_F(TlsEngineTest, VerifyFailsOnWrongHostName) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto client = engine(cctx, "other.example");
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 7).status, HandshakeStatus::kFailed);
  EXPECT_NE(client.error().find("hostname mismatch"), std::string::npos) << client.error();
  EXPECT_EQ(client.handshake(), HandshakeStatus::kFailed);  // and stays failed
  std::string out;
  EXPECT_FALSE(client.read_plaintext(out));
  EXPECT_FALSE(client.write_plaintext(std::array<std::string_view, 1>{"x"}));
  EXPECT_TRUE(server.failed());     // the alert reached the server
  EXPECT_EQ(ERR_peek_error(), 0u);  // the engine left the thread's error queue clean
}

TEST_F(TlsEngineTest, VerifyFailsOnUnknownCa) {
  auto sctx = server_ctx(*pki->other);
  auto cctx = trusting_ctx();
  auto client = engine(cctx);
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kFailed);
  EXPECT_NE(client.error().find("unable to get local issuer certificate"), std::string::npos)
      << client.error();
  EXPECT_NE(client.error().find("certificate verification failed"), std::string::npos);
  EXPECT_FALSE(client.info().verified);
}

TEST_F(TlsEngineTest, VerifyWithTheSystemStoreRejectsTheTestCa) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = client_ctx(TlsPolicy::kVerify, "");
  auto client = engine(cctx);
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kFailed);
  EXPECT_NE(client.error().find("certificate verification failed"), std::string::npos)
      << client.error();
}

TEST_F(TlsEngineTest, OpportunisticCompletesWithUnknownCaAndRecordsIt) {
  for (auto mode : {TlsPolicy::kOpportunistic, TlsPolicy::kRequired}) {
    auto sctx = server_ctx(*pki->other);
    auto cctx = trusting_ctx(mode);
    auto client = engine(cctx);
    MemoryServer server(sctx.get());
    ASSERT_EQ(pump(client, server, 7).status, HandshakeStatus::kDone) << client.error();
    TlsInfo info = client.info();
    EXPECT_FALSE(info.verified);
    EXPECT_EQ(info.verify_error, "unable to get local issuer certificate");
    EXPECT_EQ(info.version, "TLSv1.3");
    EXPECT_EQ(client.error(), "");
    write_all(client, server, {"EHLO x\r\n"}, 7);
    EXPECT_EQ(server.received(), "EHLO x\r\n");
  }
}

TEST_F(TlsEngineTest, OpportunisticRecordsHostNameMismatchAndSuccess) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx(TlsPolicy::kOpportunistic);
  {
    auto client = engine(cctx, "wrong.example", "");
    MemoryServer server(sctx.get());
    ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone) << client.error();
    EXPECT_FALSE(client.info().verified);
    EXPECT_EQ(client.info().verify_error, "hostname mismatch");
  }
  {
    auto client = engine(cctx, kHost, "");
    MemoryServer server(sctx.get());
    ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone) << client.error();
    EXPECT_TRUE(client.info().verified);
  }
}

class TlsResumption : public TlsEngineTest, public ::testing::WithParamInterface<int> {};

TEST_P(TlsResumption, SecondConnectionWithTheSameKeyResumes) {
  const int max_version = GetParam();
  auto sctx = server_ctx(*pki->ca, max_version);
  auto cctx = trusting_ctx();
  const char* expected_version = max_version == TLS1_2_VERSION ? "TLSv1.2" : "TLSv1.3";
  {
    auto client = engine(cctx, kHost, "mx.ringmail.test:25");
    MemoryServer server(sctx.get());
    ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone) << client.error();
    EXPECT_FALSE(client.info().resumed);
    EXPECT_EQ(client.info().version, expected_version);
    // TLS 1.3 tickets come after the handshake; the pump read them as a connection would.
    server.write("220 ready\r\n");
    EXPECT_EQ(pump(client, server, 100).client_plaintext, "220 ready\r\n");
  }
  EXPECT_EQ(cctx.cached_sessions(), 1u);
  // Moving the context keeps its cache (engines point at its heap state).
  TlsClientContext moved = std::move(cctx);
  for (int i = 0; i < 3; ++i) {
    auto client = engine(moved, kHost, "mx.ringmail.test:25");
    MemoryServer server(sctx.get());
    ASSERT_EQ(pump(client, server, 7).status, HandshakeStatus::kDone) << client.error();
    TlsInfo info = client.info();
    EXPECT_TRUE(info.resumed) << "connection " << i;
    EXPECT_TRUE(info.verified) << info.verify_error;
    EXPECT_EQ(info.version, expected_version);
    server.write("220 again\r\n");
    EXPECT_EQ(pump(client, server, 7).client_plaintext, "220 again\r\n");
  }
  {
    auto client = engine(moved, kHost, "other-destination:25");
    MemoryServer server(sctx.get());
    ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone) << client.error();
    EXPECT_FALSE(client.info().resumed);
  }
  moved.forget_session("mx.ringmail.test:25");
  {
    auto client = engine(moved, kHost, "mx.ringmail.test:25");
    MemoryServer server(sctx.get());
    ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone) << client.error();
    EXPECT_FALSE(client.info().resumed);
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, TlsResumption, ::testing::Values(0, TLS1_2_VERSION),
                         [](const auto& info) {
                           return std::string(info.param == 0 ? "Tls13" : "Tls12");
                         });

TEST_F(TlsEngineTest, SessionCacheIsBounded) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = TlsClientContext::create(
      TlsPolicy{.mode = TlsPolicy::kVerify, .ca_file = pki->ca->ca_pem().string()}, 2);
  ASSERT_TRUE(cctx);
  for (int i = 0; i < 5; ++i) {
    auto client = engine(*cctx, kHost, "dest" + std::to_string(i));
    MemoryServer server(sctx.get());
    ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone);
    server.write("x");
    pump(client, server, 100);
  }
  EXPECT_EQ(cctx->cached_sessions(), 2u);
}

TEST_F(TlsEngineTest, EngineOutlivingItsContextDropsLateSessions) {
  auto sctx = server_ctx(*pki->ca);
  std::optional<TlsClientContext> cctx(trusting_ctx());
  auto client = engine(*cctx);
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone);
  cctx.reset();
  server.write("220 late tickets\r\n");  // tickets are processed now, with no context left
  EXPECT_EQ(pump(client, server, 100).client_plaintext, "220 late tickets\r\n");
}

TEST_F(TlsEngineTest, ServerThatStopsMidHandshakeLeavesWantIo) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto client = engine(cctx);
  ASSERT_EQ(client.handshake(), HandshakeStatus::kWantIo);
  std::string hello;
  EXPECT_GT(client.take_ciphertext(hello), 0u);             // the ClientHello
  EXPECT_EQ(client.handshake(), HandshakeStatus::kWantIo);  // nothing came back

  // A server that sends only part of its first flight.
  MemoryServer server(sctx.get());
  server.feed(hello);
  server.step();
  std::string flight = server.take();
  ASSERT_GT(flight.size(), 100u);
  client.feed_ciphertext(std::span(flight.data(), 100));
  EXPECT_EQ(client.handshake(), HandshakeStatus::kWantIo);
  EXPECT_EQ(client.handshake(), HandshakeStatus::kWantIo);
  EXPECT_FALSE(client.handshake_done());
  EXPECT_EQ(client.info().version, "");
}

TEST_F(TlsEngineTest, GarbageCiphertextFails) {
  auto cctx = trusting_ctx();
  auto client = engine(cctx);
  ASSERT_EQ(client.handshake(), HandshakeStatus::kWantIo);
  std::string hello;
  client.take_ciphertext(hello);
  const std::string garbage = "250 this is not TLS at all\r\n";
  for (char c : garbage) {
    client.feed_ciphertext(std::span(&c, 1));
    if (client.handshake() == HandshakeStatus::kFailed) break;
  }
  EXPECT_EQ(client.handshake(), HandshakeStatus::kFailed);
  EXPECT_FALSE(client.error().empty());
  EXPECT_NE(client.error().find("TLS handshake failed"), std::string::npos) << client.error();
}

TEST_F(TlsEngineTest, GarbageAfterHandshakeFailsTheRead) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto client = engine(cctx);
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone);
  // A well-formed application-data record header with a corrupt body.
  std::string record = "\x17\x03\x03";
  record += std::string("\x00\x20", 2);
  record += std::string(32, 'x');
  client.feed_ciphertext(record);
  std::string out;
  auto r = client.read_plaintext(out);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("TLS read failed"), std::string::npos) << r.error();
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(TlsEngineTest, SmallSegmentsShareRecordsAndPendingIsBounded) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto client = engine(cctx);
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone);
  server.write("x");
  pump(client, server, 100);  // swallow the tickets so only our records are pending

  std::vector<std::string> commands;
  for (int i = 0; i < 1000; ++i) commands.push_back("RCPT TO:<u" + std::to_string(i) + "@d>\r\n");
  std::vector<std::string_view> segments(commands.begin(), commands.end());
  size_t plain = 0;
  for (auto& s : commands) plain += s.size();
  auto consumed = client.write_plaintext(segments);
  ASSERT_TRUE(consumed);
  EXPECT_EQ(*consumed, plain);
  // One record per 16 KiB, not one per command: a few records of overhead only.
  EXPECT_LT(client.pending_ciphertext(), plain + 10 * 32);

  // One huge segment: consumption stops near the bound, never far past it.
  std::string huge(4 << 20, 'h');
  std::array<std::string_view, 1> one{huge};
  consumed = client.write_plaintext(one);
  ASSERT_TRUE(consumed);
  EXPECT_LT(*consumed, huge.size());
  EXPECT_GE(client.pending_ciphertext(), TlsEngine::kMaxPendingCiphertext);
  EXPECT_LT(client.pending_ciphertext(), TlsEngine::kMaxPendingCiphertext + 17 * 1024);
  std::string out = "prefix";
  const size_t pending = client.pending_ciphertext();
  EXPECT_EQ(client.take_ciphertext(out), pending);
  EXPECT_EQ(out.size(), pending + 6);
  EXPECT_EQ(client.pending_ciphertext(), 0u);
}

TEST_F(TlsEngineTest, MovedEngineCarriesOn) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto first = engine(cctx);
  ASSERT_EQ(first.handshake(), HandshakeStatus::kWantIo);
  TlsEngine client = std::move(first);
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 7).status, HandshakeStatus::kDone) << client.error();
  std::vector<TlsEngine> engines;
  engines.push_back(std::move(client));
  server.write("220 x\r\n");
  EXPECT_EQ(pump(engines[0], server, 7).client_plaintext, "220 x\r\n");
  EXPECT_EQ(cctx.cached_sessions(), 1u);
}

TEST_F(TlsEngineTest, ShutdownQueuesCloseNotify) {
  auto sctx = server_ctx(*pki->ca);
  auto cctx = trusting_ctx();
  auto client = engine(cctx);
  MemoryServer server(sctx.get());
  ASSERT_EQ(pump(client, server, 100).status, HandshakeStatus::kDone);
  write_all(client, server, {"QUIT\r\n"}, 100);
  client.shutdown();
  client.shutdown();
  std::string out;
  EXPECT_GT(client.take_ciphertext(out), 0u);
  server.feed(out);
  server.step();
  EXPECT_EQ(server.received(), "QUIT\r\n");
  EXPECT_EQ(SSL_get_shutdown(server.ssl()) & SSL_RECEIVED_SHUTDOWN, SSL_RECEIVED_SHUTDOWN);
  EXPECT_FALSE(client.write_plaintext(std::array<std::string_view, 1>{"late"}));
}

TEST_F(TlsEngineTest, ConstructionErrorsAreValues) {
  auto bad = TlsClientContext::create(
      TlsPolicy{.mode = TlsPolicy::kVerify, .ca_file = "/nonexistent/ca.pem"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("/nonexistent/ca.pem"), std::string::npos) << bad.error();
  EXPECT_EQ(ERR_peek_error(), 0u);

  auto disabled = TlsClientContext::create(TlsPolicy{.mode = TlsPolicy::kDisabled});
  ASSERT_TRUE(disabled) << disabled.error();
  auto e = TlsEngine::create(*disabled, kHost, "");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().find("disabled"), std::string::npos);
}

TEST_F(TlsEngineTest, NoPlaintextBeforeTheHandshake) {
  auto cctx = trusting_ctx();
  auto client = engine(cctx);
  std::string out;
  EXPECT_FALSE(client.read_plaintext(out));
  EXPECT_FALSE(client.write_plaintext(std::array<std::string_view, 1>{"EHLO"}));
  EXPECT_FALSE(client.info().verified);
}

}  // namespace
}  // namespace ringmail::engine

#include "engine/tls_engine.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <utility>

namespace ringmail::engine {
namespace {

struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

bool is_ip_literal(const std::string& name) {
  unsigned char addr[16];
  return inet_pton(AF_INET, name.c_str(), addr) == 1 ||
         inet_pton(AF_INET6, name.c_str(), addr) == 1;
}

}  // namespace

struct TlsEngine::State {
  SslPtr ssl;
  BIO* rbio = nullptr;  // owned by `ssl` (SSL_set_bio); ciphertext from the server
  BIO* wbio = nullptr;  // owned by `ssl`; ciphertext for the server
  TlsPolicy::Mode mode = TlsPolicy::kOpportunistic;
  // Read by the context's new-session callback through SSL ex_data: lives here, at a
  // stable heap address, for as long as the SSL object.
  std::string session_key;
  std::string staging;  // coalesces small plaintext segments into one record; reused
  std::string error;
  bool handshake_done = false;
  bool failed = false;
  bool peer_closed = false;
  bool shutdown_sent = false;

  ~State() {
    // SSL_free of a connection that never sent close_notify marks its session not
    // resumable (an RFC 5246 truncation guard), and the context's cache holds that very
    // SSL_SESSION object. A connection that merely ended without our close_notify (a
    // timeout, the peer closing first) keeps its session usable; one that failed in TLS
    // does not.
    if (ssl && handshake_done && !failed)
      SSL_set_shutdown(ssl.get(), SSL_get_shutdown(ssl.get()) | SSL_SENT_SHUTDOWN);
  }

  // Records the first failure; everything after it reports the same text.
  std::string fail(std::string text) {
    if (!failed) {
      failed = true;
      error = std::move(text);
    }
    return error;
  }
};

std::expected<TlsEngine, std::string> TlsEngine::create(TlsClientContext& context,
                                                        std::string_view server_name,
                                                        std::string_view session_key) {
  if (context.policy().mode == TlsPolicy::kDisabled)
    return std::unexpected("TLS is disabled by policy");
  ERR_clear_error();
  auto state = std::make_unique<State>();
  state->mode = context.policy().mode;
  state->session_key.assign(session_key);
  state->ssl.reset(SSL_new(context.native()));
  if (!state->ssl) return std::unexpected("SSL_new: " + take_openssl_errors());
  SSL* ssl = state->ssl.get();

  BioPtr rbio(BIO_new(BIO_s_mem()));
  BioPtr wbio(BIO_new(BIO_s_mem()));
  if (!rbio || !wbio) return std::unexpected("BIO_new: " + take_openssl_errors());
  // An empty read BIO means "no bytes yet", not end of stream: the socket's EOF is the
  // connection's business, reported by the ring.
  BIO_set_mem_eof_return(rbio.get(), -1);
  BIO_set_mem_eof_return(wbio.get(), -1);
  state->rbio = rbio.get();
  state->wbio = wbio.get();
  SSL_set_bio(ssl, rbio.release(), wbio.release());  // the SSL owns both from here
  SSL_set_connect_state(ssl);

  std::string name(server_name);
  if (name.ends_with('.')) name.pop_back();  // MX names often come fully qualified
  if (!name.empty()) {
    if (is_ip_literal(name)) {
      // No SNI for addresses (RFC 6066); the certificate must carry an IP SAN.
      if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) != 1)
        return std::unexpected("bad IP address '" + name + "': " + take_openssl_errors());
    } else {
      if (SSL_set_tlsext_host_name(ssl, name.c_str()) != 1)
        return std::unexpected("SNI '" + name + "': " + take_openssl_errors());
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (SSL_set1_host(ssl, name.c_str()) != 1)
        return std::unexpected("host name '" + name + "': " + take_openssl_errors());
    }
  }

  if (!state->session_key.empty()) {
    if (SSL_set_ex_data(ssl, TlsClientContext::session_key_index(), &state->session_key) != 1)
      return std::unexpected("SSL_set_ex_data: " + take_openssl_errors());
    if (SSL_SESSION* cached = context.find_session(state->session_key)) {
      // A failure only costs the resumption: a full handshake follows.
      if (SSL_set_session(ssl, cached) != 1) ERR_clear_error();
    }
  }
  return TlsEngine(std::move(state));
}

TlsEngine::TlsEngine(std::unique_ptr<State> state) : state_(std::move(state)) {}
TlsEngine::TlsEngine(TlsEngine&&) noexcept = default;
TlsEngine& TlsEngine::operator=(TlsEngine&&) noexcept = default;
TlsEngine::~TlsEngine() = default;

void TlsEngine::feed_ciphertext(std::span<const char> bytes) {
  State& s = *state_;
  while (!bytes.empty()) {
    const int n = int(std::min<size_t>(bytes.size(), INT_MAX));
    if (BIO_write(s.rbio, bytes.data(), n) != n) {
      s.fail("out of memory buffering received ciphertext: " + take_openssl_errors());
      return;
    }
    bytes = bytes.subspan(size_t(n));
  }
}

HandshakeStatus TlsEngine::handshake() {
  State& s = *state_;
  if (s.failed) return HandshakeStatus::kFailed;
  if (s.handshake_done) return HandshakeStatus::kDone;
  // The error queue is per thread and shared by every connection on the shard.
  ERR_clear_error();
  const int r = SSL_do_handshake(s.ssl.get());
  if (r == 1) {
    s.handshake_done = true;
    return HandshakeStatus::kDone;
  }
  const int e = SSL_get_error(s.ssl.get(), r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return HandshakeStatus::kWantIo;

  const long verify = SSL_get_verify_result(s.ssl.get());
  std::string queue = take_openssl_errors("");
  std::string text;
  if (verify != X509_V_OK && s.mode == TlsPolicy::kVerify) {
    text = std::string("certificate verification failed: ") +
           X509_verify_cert_error_string(verify) + " (verify error " + std::to_string(verify) + ")";
    if (!queue.empty()) text += "; " + queue;
  } else if (!queue.empty()) {
    text = "TLS handshake failed: " + queue;
  } else {
    text = "TLS handshake failed (SSL error " + std::to_string(e) + ")";
  }
  s.fail(std::move(text));
  return HandshakeStatus::kFailed;
}

bool TlsEngine::handshake_done() const { return state_->handshake_done; }

std::expected<size_t, std::string> TlsEngine::read_plaintext(std::string& out) {
  State& s = *state_;
  if (s.failed) return std::unexpected(s.error);
  if (!s.handshake_done) return std::unexpected("read before the TLS handshake completed");
  if (s.peer_closed) return 0;
  ERR_clear_error();
  size_t total = 0;
  for (;;) {
    int r = 0;
    size_t got = 0;
    const size_t old = out.size();
    // Decrypt straight into the caller's buffer; its capacity is reused across calls.
    out.resize_and_overwrite(old + kRecordBytes, [&](char* data, size_t) {
      r = SSL_read_ex(s.ssl.get(), data + old, kRecordBytes, &got);
      return old + (r == 1 ? got : 0);
    });
    if (r == 1) {
      total += got;
      continue;
    }
    const int e = SSL_get_error(s.ssl.get(), r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return total;
    if (e == SSL_ERROR_ZERO_RETURN) {
      s.peer_closed = true;
      return total;
    }
    return std::unexpected(s.fail("TLS read failed: " + take_openssl_errors()));
  }
}

bool TlsEngine::peer_closed() const { return state_->peer_closed; }

std::expected<size_t, std::string> TlsEngine::write_plaintext(
    std::span<const std::string_view> segments) {
  State& s = *state_;
  if (s.failed) return std::unexpected(s.error);
  if (!s.handshake_done) return std::unexpected("write before the TLS handshake completed");
  if (s.shutdown_sent) return std::unexpected("write after TLS shutdown");
  ERR_clear_error();
  size_t consumed = 0;
  size_t i = 0;       // current segment
  size_t offset = 0;  // bytes of segments[i] already taken
  while (pending_ciphertext() < kMaxPendingCiphertext) {
    while (i < segments.size() && offset == segments[i].size()) {
      ++i;
      offset = 0;
    }
    if (i == segments.size()) break;
    std::string_view record;
    if (segments[i].size() - offset >= kRecordBytes) {
      // A large segment (a message body) is encrypted in place, one full record at a time.
      record = segments[i].substr(offset, kRecordBytes);
      offset += kRecordBytes;
    } else {
      // Small segments (pipelined commands) share a record: one seal, 22 bytes of overhead.
      if (s.staging.capacity() < kRecordBytes) s.staging.reserve(kRecordBytes);
      s.staging.clear();
      while (i < segments.size() && s.staging.size() < kRecordBytes) {
        const size_t take = std::min(segments[i].size() - offset, kRecordBytes - s.staging.size());
        s.staging.append(segments[i].data() + offset, take);
        offset += take;
        if (offset == segments[i].size()) {
          ++i;
          offset = 0;
        }
      }
      record = s.staging;
    }
    size_t written = 0;
    if (SSL_write_ex(s.ssl.get(), record.data(), record.size(), &written) != 1 ||
        written != record.size()) {
      return std::unexpected(s.fail("TLS write failed: " + take_openssl_errors()));
    }
    consumed += written;
  }
  return consumed;
}

size_t TlsEngine::take_ciphertext(std::string& out) {
  State& s = *state_;
  const size_t n = BIO_ctrl_pending(s.wbio);
  if (n == 0) return 0;
  const size_t old = out.size();
  int got = 0;
  out.resize_and_overwrite(old + n, [&](char* data, size_t) {
    got = BIO_read(s.wbio, data + old, int(std::min<size_t>(n, INT_MAX)));
    return old + size_t(std::max(got, 0));
  });
  return size_t(std::max(got, 0));
}

size_t TlsEngine::pending_ciphertext() const { return BIO_ctrl_pending(state_->wbio); }

void TlsEngine::shutdown() {
  State& s = *state_;
  if (s.shutdown_sent || !s.handshake_done || s.failed) return;
  s.shutdown_sent = true;
  ERR_clear_error();
  SSL_shutdown(s.ssl.get());  // 0 ("sent, not yet received") is all we want
  ERR_clear_error();
}

TlsInfo TlsEngine::info() const {
  const State& s = *state_;
  TlsInfo info;
  if (!s.handshake_done) {
    info.verify_error = s.failed ? s.error : "handshake not completed";
    return info;
  }
  SSL* ssl = s.ssl.get();
  info.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl))
    info.cipher = SSL_CIPHER_get_name(cipher);
  info.resumed = SSL_session_reused(ssl) == 1;
  const long verify = SSL_get_verify_result(ssl);
  // A resumed session carries the verify result of the handshake that created it, but no
  // peer certificate in TLS 1.3 unless it was stored: the result is what counts.
  const bool have_cert = SSL_get0_peer_certificate(ssl) != nullptr || info.resumed;
  info.verified = verify == X509_V_OK && have_cert;
  if (!info.verified)
    info.verify_error = have_cert ? X509_verify_cert_error_string(verify) : "no server certificate";
  return info;
}

const std::string& TlsEngine::error() const { return state_->error; }

}  // namespace ringmail::engine

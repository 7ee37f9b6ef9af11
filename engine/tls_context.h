// Client-side TLS settings shared by a shard's connections: one OpenSSL SSL_CTX built
// from a TlsPolicy, plus a per-destination cache of sessions so a pool that reopens
// connections resumes instead of paying a full handshake each time.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>

namespace ringmail::engine {

struct TlsPolicy {
  enum Mode : uint8_t {
    kDisabled,       // never STARTTLS; no TlsEngine may be created from such a context
    kOpportunistic,  // TLS when offered; an unverifiable certificate does not block
    kRequired,       // TLS must happen; an unverifiable certificate does not block
    kVerify,         // chain and host name checked (SNI sent); failure fails the handshake
  };
  Mode mode = kOpportunistic;
  // Trust anchors. Both empty: the system store (SSL_CTX_set_default_verify_paths). They
  // are loaded in every mode except kDisabled, so TlsInfo::verified is meaningful there too.
  std::string ca_file{};
  std::string ca_dir{};
  // Keep sessions per destination and resume them on new connections (one round trip and
  // no certificate check instead of a full handshake). Off: every connection pays in full.
  bool resume_sessions = true;
};

// "disabled", "opportunistic", "required", "verify": the words of --tls and tls.mode.
// Inline, so app/ can name a mode without linking the TLS library.
inline const char* to_string(TlsPolicy::Mode mode) {
  switch (mode) {
    case TlsPolicy::kDisabled: return "disabled";
    case TlsPolicy::kOpportunistic: return "opportunistic";
    case TlsPolicy::kRequired: return "required";
    case TlsPolicy::kVerify: return "verify";
  }
  return "unknown";
}

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslSessionFree {
  void operator()(SSL_SESSION* session) const { SSL_SESSION_free(session); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslSessionPtr = std::unique_ptr<SSL_SESSION, SslSessionFree>;

// The session cache key of a connection to `address`:`port` expecting `server_name` (SNI
// and the certificate check) under security profile `profile`. It names everything a
// resumed session vouches for: OpenSSL does not check the certificate again when it
// resumes, so a session verified for one name must never be offered to a connection that
// expects another name at the same address (whoever got a ticket there for a name of its
// own would pass for any other). E.g. "mx.example.com@192.0.2.1:25/0".
std::string tls_session_key(std::string_view server_name, std::string_view address, uint16_t port,
                            uint16_t profile);

// Everything on this thread's OpenSSL error queue as one line ("lib: reason; ..."), capped
// at about 1 KiB; the queue is empty afterwards. `fallback` when the queue was empty.
std::string take_openssl_errors(std::string_view fallback = "unknown TLS error");

// Not thread-safe: one per shard (per policy). Movable; engines keep a pointer to its
// internal state, which stays put when the context moves. The context must outlive the
// TlsEngines created from it; if it does not, sessions they receive are simply dropped.
class TlsClientContext {
 public:
  static constexpr size_t kDefaultMaxCachedSessions = 1024;

  // Errors (unreadable CA file, OpenSSL failure) are returned with the reason.
  static std::expected<TlsClientContext, std::string> create(
      const TlsPolicy& policy, size_t max_cached_sessions = kDefaultMaxCachedSessions);

  TlsClientContext(TlsClientContext&&) noexcept;
  TlsClientContext& operator=(TlsClientContext&&) noexcept;
  ~TlsClientContext();

  const TlsPolicy& policy() const;
  SSL_CTX* native() const;

  // The cached session for `key` if it can still be resumed; null otherwise. The context
  // keeps its reference; SSL_set_session takes its own.
  SSL_SESSION* find_session(std::string_view key) const;
  void forget_session(std::string_view key);
  size_t cached_sessions() const;

  // SSL ex_data index under which a TlsEngine stores a `const std::string*` with its
  // session key; the new-session callback reads it. Process-wide, created once.
  static int session_key_index();

  struct State;  // defined in tls_context.cc

 private:
  explicit TlsClientContext(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace ringmail::engine

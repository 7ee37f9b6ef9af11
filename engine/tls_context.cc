#include "engine/tls_context.h"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include <functional>
#include <unordered_map>
#include <utility>

namespace ringmail::engine {
namespace {

constexpr size_t kMaxErrorText = 1024;

struct KeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
};

}  // namespace

struct TlsClientContext::State {
  TlsPolicy policy;
  size_t max_sessions = 0;
  SslCtxPtr ctx;
  std::unordered_map<std::string, SslSessionPtr, KeyHash, std::equal_to<>> sessions;

  ~State() {
    // Engines may still hold the SSL_CTX (SSL_new took a reference): their late session
    // callbacks must find no state rather than this freed one.
    if (ctx) SSL_CTX_set_app_data(ctx.get(), nullptr);
  }
};

namespace {

// Called by OpenSSL when the server hands out a session: at the end of a TLS 1.2
// handshake, and for each TLS 1.3 NewSessionTicket, which arrives *after* the handshake
// and is only processed when the engine reads. Returning 1 keeps the reference.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* state = static_cast<TlsClientContext::State*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  auto* key =
      static_cast<const std::string*>(SSL_get_ex_data(ssl, TlsClientContext::session_key_index()));
  if (state == nullptr || key == nullptr || key->empty() || state->max_sessions == 0) return 0;
  if (!SSL_SESSION_is_resumable(session)) return 0;
  auto it = state->sessions.find(*key);
  if (it != state->sessions.end()) {
    it->second.reset(session);  // the newest ticket replaces the older one
    return 1;
  }
  if (state->sessions.size() >= state->max_sessions) {
    // Any victim will do: the cache only saves handshakes, it is never needed for
    // correctness, and a bounded size matters more than the best choice.
    state->sessions.erase(state->sessions.begin());
  }
  state->sessions.emplace(*key, SslSessionPtr(session));
  return 1;
}

}  // namespace

std::string tls_session_key(std::string_view server_name, std::string_view address, uint16_t port,
                            uint16_t profile) {
  std::string key;
  key.reserve(server_name.size() + address.size() + 16);
  key.append(server_name).append("@");
  if (address.find(':') != std::string_view::npos) key.append("[").append(address).append("]");
  else key.append(address);
  key.append(":").append(std::to_string(port)).append("/").append(std::to_string(profile));
  return key;
}

std::string take_openssl_errors(std::string_view fallback) {
  std::string text;
  const char* data = nullptr;
  int flags = 0;
  while (unsigned long e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
    if (text.size() >= kMaxErrorText) continue;  // keep draining the queue
    if (!text.empty()) text += "; ";
    const char* lib = ERR_lib_error_string(e);
    const char* reason = ERR_reason_error_string(e);
    if (lib != nullptr) {
      text += lib;
      text += ": ";
    }
    if (reason != nullptr) {
      text += reason;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      text += buf;
    }
    if ((flags & ERR_TXT_STRING) && data != nullptr && *data != '\0') {
      text += " (";
      text += data;
      text += ")";
    }
  }
  if (text.size() > kMaxErrorText) text.resize(kMaxErrorText);
  if (text.empty()) text = fallback;
  return text;
}

int TlsClientContext::session_key_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

std::expected<TlsClientContext, std::string> TlsClientContext::create(const TlsPolicy& policy,
                                                                      size_t max_cached_sessions) {
  ERR_clear_error();
  auto state = std::make_unique<State>();
  state->policy = policy;
  state->max_sessions = max_cached_sessions;
  state->ctx.reset(SSL_CTX_new(TLS_client_method()));
  if (!state->ctx) return std::unexpected("SSL_CTX_new: " + take_openssl_errors());
  SSL_CTX* ctx = state->ctx.get();

  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
    return std::unexpected("TLS 1.2 minimum: " + take_openssl_errors());
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // Memory BIOs never block a write, so SSL_write always completes whole; this only keeps
  // OpenSSL from insisting on the same buffer address after a retry.
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

  if (policy.mode != TlsPolicy::kDisabled) {
    if (policy.ca_file.empty() && policy.ca_dir.empty()) {
      if (SSL_CTX_set_default_verify_paths(ctx) != 1)
        return std::unexpected("system CA store: " + take_openssl_errors());
    } else if (SSL_CTX_load_verify_locations(
                   ctx, policy.ca_file.empty() ? nullptr : policy.ca_file.c_str(),
                   policy.ca_dir.empty() ? nullptr : policy.ca_dir.c_str()) != 1) {
      return std::unexpected("CA file '" + policy.ca_file + "' / dir '" + policy.ca_dir +
                             "': " + take_openssl_errors());
    }
  }
  // A client with SSL_VERIFY_NONE still verifies the server's chain (and host name, when
  // set) and keeps the result for SSL_get_verify_result; it just does not abort. That
  // records the *first* failure ("unable to get local issuer certificate"), where a
  // verify callback that always returns 1 would let verification run on and record the
  // last one ("unable to verify the first certificate").
  SSL_CTX_set_verify(ctx, policy.mode == TlsPolicy::kVerify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                     nullptr);

  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  SSL_CTX_set_app_data(ctx, state.get());
  return TlsClientContext(std::move(state));
}

TlsClientContext::TlsClientContext(std::unique_ptr<State> state) : state_(std::move(state)) {}
TlsClientContext::TlsClientContext(TlsClientContext&&) noexcept = default;
TlsClientContext& TlsClientContext::operator=(TlsClientContext&&) noexcept = default;
TlsClientContext::~TlsClientContext() = default;

const TlsPolicy& TlsClientContext::policy() const { return state_->policy; }
SSL_CTX* TlsClientContext::native() const { return state_->ctx.get(); }

SSL_SESSION* TlsClientContext::find_session(std::string_view key) const {
  auto it = state_->sessions.find(key);
  if (it == state_->sessions.end()) return nullptr;

  if (!SSL_SESSION_is_resumable(it->second.get())) return nullptr;
  // An expired session would only cost a full handshake, but skip it anyway.
  const time_t now = time(nullptr);
  if (SSL_SESSION_get_time(it->second.get()) + SSL_SESSION_get_timeout(it->second.get()) < now)
    return nullptr;
  return it->second.get();
}

void TlsClientContext::forget_session(std::string_view key) {
  auto it = state_->sessions.find(key);
  if (it != state_->sessions.end()) state_->sessions.erase(it);
}

size_t TlsClientContext::cached_sessions() const { return state_->sessions.size(); }

}  // namespace ringmail::engine

// One client TLS connection as a pure byte transformer: ciphertext from the socket goes in
// through feed_ciphertext(), ciphertext to send comes out of take_ciphertext(). OpenSSL
// runs over two memory BIOs (never a socket), so the shard's ring does all the I/O.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <expected>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "engine/tls_context.h"

namespace ringmail::engine {

struct TlsInfo {
  std::string version{};       // "TLSv1.3"; empty before the handshake is done
  std::string cipher{};        // "TLS_AES_256_GCM_SHA384"
  bool verified = false;       // chain and host name verified (also in non-verify modes)
  bool resumed = false;        // this handshake resumed a cached session
  std::string verify_error{};  // why not verified, e.g. "hostname mismatch"; empty if it was
};

enum class HandshakeStatus : uint8_t {
  kDone,    // application data may flow; call read_plaintext() at once: the bytes that
            // finished the handshake may carry the server's first reply too
  kWantIo,  // send take_ciphertext() if any, then wait for more bytes (or the deadline)
  kFailed,  // see error(); send take_ciphertext() (it may hold an alert), then close
};

// Usage from a connection (call order):
//   after each receive:  feed_ciphertext(bytes);
//                        if (!handshake_done()) status = handshake();
//                        if (handshake_done()) read_plaintext(plaintext);  // check peer_closed()
//   to send plaintext:   write_plaintext(segments)  (returns how much it consumed)
//   before each send:    take_ciphertext(buffer) when no send of `buffer` is in flight
// Any of handshake(), read_plaintext(), write_plaintext() and shutdown() may produce
// ciphertext (handshake flights, key updates, alerts); so after any of them, send it.
//
// Not thread-safe; one engine per connection on the shard's thread. Movable.
class TlsEngine {
 public:
  // Stop encrypting once this much ciphertext waits in take_ciphertext(): the caller
  // gets it out before more plaintext is accepted, so memory per connection stays bounded.
  static constexpr size_t kMaxPendingCiphertext = 256 * 1024;
  // Largest plaintext per TLS record; writes are coalesced up to this size.
  static constexpr size_t kRecordBytes = 16 * 1024;

  // `server_name` is sent as SNI (unless it is an IP literal) and checked against the
  // certificate (DNS name or IP address); the check fails the handshake only in kVerify,
  // otherwise it shows in info(). `session_key` names the destination in the context's
  // session cache (tls_session_key(): name, address, port, profile); empty: no
  // resumption. The context must outlive the engine. Fails for a kDisabled context.
  static std::expected<TlsEngine, std::string> create(TlsClientContext& context,
                                                      std::string_view server_name,
                                                      std::string_view session_key);

  TlsEngine(TlsEngine&&) noexcept;
  TlsEngine& operator=(TlsEngine&&) noexcept;
  ~TlsEngine();
  TlsEngine(const TlsEngine&) = delete;
  TlsEngine& operator=(const TlsEngine&) = delete;

  // Bytes received from the socket, copied into the engine. The caller drains them with
  // handshake()/read_plaintext() before feeding more, which keeps this buffer bounded by
  // one receive plus one partial record.
  void feed_ciphertext(std::span<const char> bytes);

  // Advances the handshake; kDone once it has completed (and from then on).
  HandshakeStatus handshake();
  bool handshake_done() const;

  // Appends every plaintext byte that the fed ciphertext decrypts to; returns how many.
  // A close_notify from the server sets peer_closed() (bytes before it are still
  // returned). Errors (bad record, MAC failure, unexpected message) are values; the
  // connection is then unusable.
  std::expected<size_t, std::string> read_plaintext(std::string& out);
  bool peer_closed() const;

  // Encrypts from `segments` in order, coalescing small segments into full records;
  // returns how many plaintext bytes were consumed (from the front of the concatenation).
  // Consumes less than offered once kMaxPendingCiphertext is pending; call again after
  // take_ciphertext(). Only after the handshake is done.
  std::expected<size_t, std::string> write_plaintext(std::span<const std::string_view> segments);

  // Appends all pending ciphertext to `out` and returns how many bytes. The caller owns
  // `out` and must not grow it while a send from it is in flight (it may reallocate).
  size_t take_ciphertext(std::string& out);
  size_t pending_ciphertext() const;

  // Queues a close_notify (to send before closing after QUIT; the shard does when the
  // session is over). Idempotent; does nothing before the handshake is done or after a
  // failure.
  void shutdown();

  TlsInfo info() const;
  // Why handshake(), read_plaintext() or write_plaintext() failed; empty otherwise.
  const std::string& error() const;

  struct State;  // defined in tls_engine.cc

 private:
  explicit TlsEngine(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace ringmail::engine

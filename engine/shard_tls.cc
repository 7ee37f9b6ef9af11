// How a shard protects its connections: security profiles, STARTTLS and implicit TLS
// through the TLS engine, between the ring and the session.
#include "engine/shard.h"

#include <poll.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "engine/completion_token.h"
#include "engine/shard_replies.h"

namespace ringmail::engine {

const TransportSecurity& Shard::security_for(const DestinationPool& pool) const {
  const uint16_t profile = pool.destination().security_profile;
  assert(profile <= options_.route_security.size());
  if (profile != 0) return options_.route_security[profile - 1];
  // [auth] and implicit TLS are the relay's: a domain's own exchangers never get them
  // (a relay password must not be offered to another domain's MX).
  return pool.destination().mx_domain.empty() ? options_.security : mx_security_;
}

TlsClientContext* Shard::tls_context_for(const DestinationPool& pool) {
  const uint16_t profile = pool.destination().security_profile;
  if (profile >= tls_contexts_.size() || !tls_contexts_[profile]) return nullptr;
  return &*tls_contexts_[profile];
}

Shard::~Shard() {
  // The resolver closes its sockets through watch(), which uses the ring: it goes first.
  resolver_.reset();
}

smtp::SessionOptions Shard::session_options_for(const DestinationPool& pool) const {
  smtp::SessionOptions o;
  o.helo_name = options_.helo_name;
  o.allow_pipelining = options_.pipelining;
  const TransportSecurity& security = security_for(pool);
  o.implicit_tls = security.implicit_tls;
  if (!security.implicit_tls) {
    switch (security.tls.mode) {
      case TlsPolicy::kDisabled: o.starttls = smtp::StartTlsPolicy::kNever; break;
      case TlsPolicy::kOpportunistic:
        o.starttls = pool.starttls_broken(now_) ? smtp::StartTlsPolicy::kNever
                                                : smtp::StartTlsPolicy::kIfOffered;
        break;
      case TlsPolicy::kRequired:
      case TlsPolicy::kVerify: o.starttls = smtp::StartTlsPolicy::kRequired; break;
    }
  }
  o.auth = security.auth;
  return o;
}

// ---------------------------------------------------------------------------- TLS

void Shard::start_tls(uint32_t slot) {
  Connection& c = connections_[slot];
  const PoolHost& host = c.pool->host(c.host_index);
  TlsClientContext* context = tls_context_for(*c.pool);
  const std::string& server_name = host.tls_name.empty() ? host.address : host.tls_name;
  std::expected<TlsEngine, std::string> engine =
      context ? TlsEngine::create(*context, server_name,
                                  tls_session_key(server_name, host.address, c.pool->destination().port,
                                                  c.pool->destination().security_profile))
              : std::unexpected(std::string("TLS is disabled for this route"));
  if (engine) {
    c.tls.emplace(std::move(*engine));
    if (c.tls->handshake() != HandshakeStatus::kFailed) {
      mark_dirty(slot);  // the ClientHello
      return;
    }
    engine = std::unexpected(c.tls->error());
  }
  counters_.count_tls_failure();
  c.session->tls_failed(engine.error());
}

void Shard::receive_tls(uint32_t slot, std::string_view ciphertext) {
  Connection& c = connections_[slot];
  TlsEngine& tls = *c.tls;
  smtp::ClientSession& session = *c.session;
  tls.feed_ciphertext(ciphertext);
  if (!tls.handshake_done()) {
    switch (tls.handshake()) {
      case HandshakeStatus::kWantIo: return;  // its next flight is sent by the caller
      case HandshakeStatus::kFailed:
        counters_.count_tls_failure();
        if (security_for(*c.pool).tls.mode == TlsPolicy::kOpportunistic &&
            !security_for(*c.pool).implicit_tls)
          c.pool->note_starttls_failed(now_);
        session.tls_failed(tls.error());
        return;
      case HandshakeStatus::kDone:
        counters_.count_tls_handshake(tls.info().resumed);
        if (!security_for(*c.pool).implicit_tls) session.tls_established();
        break;
    }
  }
  // The bytes that finished the handshake may already carry the server's next reply.
  c.tls_plaintext.clear();
  auto decrypted = tls.read_plaintext(c.tls_plaintext);
  if (!decrypted) {
    fail_connection(slot, kSecurityFailure, "TLS: " + decrypted.error(), ConnectionFailure::kTls);
    return;
  }
  if (!c.tls_plaintext.empty()) session.receive(c.tls_plaintext);
  if (tls.peer_closed()) {
    if (session.phase() == smtp::SessionPhase::kClosed) begin_close(slot);
    else fail_connection(slot, kConnectionLost, "TLS session closed by " + c.pool->destination().key(),
                         ConnectionFailure::kClosed);
  }
}

void Shard::submit_tls_send(uint32_t slot) {
  Connection& c = connections_[slot];
  TlsEngine& tls = *c.tls;
  if (c.tls_out_sent >= c.tls_out.size()) {
    // The last ciphertext is all out, so its buffer may be refilled: encrypt what the
    // session has to say, then take every pending record (handshake flights included).
    c.tls_out.clear();
    c.tls_out_sent = 0;
    if (tls.handshake_done()) {
      std::array<std::string_view, Connection::kMaxSendSegments> segments;
      size_t n = c.session->pending_output(segments);
      if (n > 0) {
        auto consumed = tls.write_plaintext({segments.data(), n});
        if (!consumed) {
          fail_connection(slot, kSecurityFailure, "TLS: " + consumed.error(), ConnectionFailure::kTls);
          return;
        }
        c.session->mark_sent(*consumed);
      }
    }
    tls.take_ciphertext(c.tls_out);
    if (c.tls_out.empty()) return;
  }
  c.send_iov[0] = {c.tls_out.data() + c.tls_out_sent, c.tls_out.size() - c.tls_out_sent};
  c.send_msg = {};
  c.send_msg.msg_iov = c.send_iov.data();
  c.send_msg.msg_iovlen = 1;
  io_uring_sqe* sqe = ring_.sqe();
  io_uring_prep_sendmsg(sqe, c.fd, &c.send_msg, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kSend, slot, c.generation}.encode());
  ++c.ops_in_flight;
  c.send_in_flight = true;
}

bool Shard::has_output(const Connection& c) const {
  if (c.session->pending_output_bytes() > 0) return true;
  return c.tls && (c.tls->pending_ciphertext() > 0 || c.tls_out_sent < c.tls_out.size());
}

}  // namespace ringmail::engine

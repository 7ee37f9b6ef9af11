// A shard's connections: opening them, receives and sends on the ring, what follows each
// session event, deadlines, and failing and closing them.
#include "engine/shard.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "engine/completion_token.h"
#include "engine/shard_internal.h"
#include "engine/shard_replies.h"

namespace ringmail::engine {

// ---------------------------------------------------------------------------- connections

void Shard::open_connection(DestinationPool& pool) {
  // Rate limited and no token yet: schedule_active_pools() looks at the pool again.
  // (next_token_time() is time_point::max() while tokens remain.)
  if (pool.limits().messages_per_second > 0) {
    const Clock::time_point next_token = pool.next_token_time(now_);
    if (next_token != Clock::time_point::max() && next_token > now_) return;
  }
  const std::optional<size_t> host_index = pool.pick_host(now_);
  if (!host_index) return;  // every host set aside: the caller defers the queue
  const PoolHost& host = pool.host(*host_index);
  int fd = ::socket(host.sockaddr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    // A local failure (EMFILE, ENFILE...). Without a connection of the pool to carry its
    // queue later, nothing would wake it again: defer its work now with the reason.
    const int error = errno;
    const smtp::Reply why = local_reply(kNoAnswer, std::string("cannot create socket: ") + strerror(error));
    counters_.count_connection_failure(connection_failure_from_errno(error), pool.site);
    if (pool.connections.empty()) {
      while (!pool.queue.empty()) {
        smtp::Transaction txn = std::move(pool.queue.front());
        pool.queue.pop_front();
        give_up_not_attempted(std::move(txn), why, false, pool.site);
      }
    }
    return;
  }
  // Commands are small and each write is a complete unit; Nagle would only add delay.
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  uint32_t slot = connections_.acquire();
  Connection& c = connections_[slot];
  c.state = Connection::State::kConnecting;
  c.fd = fd;
  c.pool = &pool;
  c.host_index = uint32_t(*host_index);
  c.session.emplace(session_options_for(pool));
  c.deadline = now_ + to_duration(options_.timeouts.connect);
  pool.connections.push_back(slot);
  ++pool.connecting;
  counters_.count_connection_opened();

  io_uring_sqe* sqe = ring_.sqe();
  io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&host.sockaddr), host.sockaddr_length);
  io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kConnect, slot, c.generation}.encode());
  ++c.ops_in_flight;
  // The connecting session takes its first transaction now, so the next connection is
  // opened only for work beyond it.
  feed_connection(slot);
}

void Shard::on_connect(uint32_t slot, int result) {
  Connection& c = connections_[slot];
  --c.ops_in_flight;
  if (c.state == Connection::State::kConnecting) --c.pool->connecting;
  if (c.state != Connection::State::kConnecting) {
    maybe_submit_close(slot);
    return;
  }
  if (result < 0) {
    fail_connection(slot, kNoAnswer,
                    "connect to " + c.pool->destination().key() + ": " + strerror(-result),
                    connection_failure_from_errno(-result));
    return;
  }
  c.state = Connection::State::kOpen;
  arm_receive(slot);
  if (security_for(*c.pool).implicit_tls) {
    start_tls(slot);  // RFC 8314: the handshake comes before the greeting
    after_session_event(slot);
    return;
  }
  set_deadline(c);
}

void Shard::arm_receive(uint32_t slot) {
  Connection& c = connections_[slot];
  io_uring_sqe* sqe = ring_.sqe();
  if (multishot_receive_) {
    io_uring_prep_recv_multishot(sqe, c.fd, nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = ReceiveBufferRing::kGroupId;
  } else {
    if (!c.fallback_receive_buffer)
      c.fallback_receive_buffer = std::make_unique<char[]>(Connection::kFallbackReceiveBytes);
    io_uring_prep_recv(sqe, c.fd, c.fallback_receive_buffer.get(),
                       Connection::kFallbackReceiveBytes, 0);
  }
  io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kRecv, slot, c.generation}.encode());
  ++c.ops_in_flight;
  c.recv_armed = true;
}

void Shard::on_receive(uint32_t slot, const io_uring_cqe& cqe) {
  Connection& c = connections_[slot];
  const bool more = cqe.flags & IORING_CQE_F_MORE;
  if (!more) {
    c.recv_armed = false;
    --c.ops_in_flight;
  }
  const int result = cqe.res;
  const bool provided = cqe.flags & IORING_CQE_F_BUFFER;
  const uint16_t buffer_id = uint16_t(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
  if (result > 0) {
    std::string_view bytes;
    if (provided) {
      auto span = receive_buffers_->buffer(buffer_id, size_t(result));
      bytes = {span.data(), span.size()};
    } else {
      bytes = {c.fallback_receive_buffer.get(), size_t(result)};
    }
    // The session (or the TLS engine) copies what it keeps, so the buffer goes back to
    // the kernel at once.
    if (c.state == Connection::State::kOpen) {
      if (c.tls) receive_tls(slot, bytes);
      else c.session->receive(bytes);
    }
  }
  if (provided) receive_buffers_->recycle(buffer_id);
  if (c.state != Connection::State::kOpen) {
    maybe_submit_close(slot);
    return;
  }
  if (result == 0) {
    if (c.session->phase() == smtp::SessionPhase::kClosed) {
      begin_close(slot);  // the server closed after our QUIT or after an error reply
      return;
    }
    fail_connection(slot, kConnectionLost, "connection closed by " + c.pool->destination().key(),
                    ConnectionFailure::kClosed);
    return;
  }
  if (result < 0) {
    if (result == -EINVAL && multishot_receive_ && c.session->phase() == smtp::SessionPhase::kConnecting) {
      // Multishot receive is not supported here: use single receives from now on.
      multishot_receive_ = false;
    } else if (result != -ENOBUFS) {
      // ENOBUFS only means every provided buffer was busy; they are back now, so re-arm.
      fail_connection(slot, kConnectionLost, std::string("receive failed: ") + strerror(-result),
                      connection_failure_from_errno(-result));
      return;
    }
  }
  if (!c.recv_armed && c.session->phase() != smtp::SessionPhase::kClosed) arm_receive(slot);
  after_session_event(slot);
}

void Shard::submit_send(uint32_t slot) {
  Connection& c = connections_[slot];
  if (c.tls) {
    submit_tls_send(slot);
    return;
  }
  std::array<std::string_view, Connection::kMaxSendSegments> segments;
  size_t n = c.session->pending_output(segments);
  if (n == 0) return;
  for (size_t i = 0; i < n; ++i)
    c.send_iov[i] = {const_cast<char*>(segments[i].data()), segments[i].size()};
  c.send_msg = {};
  c.send_msg.msg_iov = c.send_iov.data();
  c.send_msg.msg_iovlen = n;
  io_uring_sqe* sqe = ring_.sqe();
  io_uring_prep_sendmsg(sqe, c.fd, &c.send_msg, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kSend, slot, c.generation}.encode());
  ++c.ops_in_flight;
  c.send_in_flight = true;
}

void Shard::on_send(uint32_t slot, int result) {
  Connection& c = connections_[slot];
  --c.ops_in_flight;
  c.send_in_flight = false;
  if (c.state != Connection::State::kOpen) {
    maybe_submit_close(slot);
    return;
  }
  if (result < 0) {
    fail_connection(slot, kConnectionLost, std::string("send failed: ") + strerror(-result),
                    connection_failure_from_errno(-result));
    return;
  }
  if (c.tls) c.tls_out_sent += size_t(result);  // the session was told when TLS took its bytes
  else c.session->mark_sent(size_t(result));
  after_session_event(slot);
}

void Shard::mark_dirty(uint32_t slot) {
  Connection& c = connections_[slot];
  if (c.in_dirty_list) return;
  c.in_dirty_list = true;
  dirty_.push_back(slot);
}

void Shard::flush_sends() {
  // One send per connection per loop turn, all submitted together with the next wait.
  for (size_t i = 0; i < dirty_.size(); ++i) {
    uint32_t slot = dirty_[i];
    Connection& c = connections_[slot];
    c.in_dirty_list = false;
    if (c.state != Connection::State::kOpen || c.send_in_flight) continue;
    if (has_output(c)) {
      submit_send(slot);
    } else if (c.close_after_send) {
      begin_close(slot);
    }
  }
  dirty_.clear();
}

void Shard::after_session_event(uint32_t slot) {
  Connection& c = connections_[slot];
  smtp::ClientSession& session = *c.session;
  // STARTTLS's 220 is in: the handshake starts once the command itself is fully out.
  if (!c.tls && session.wants_tls_handshake() && !c.send_in_flight &&
      session.pending_output_bytes() == 0)
    start_tls(slot);
  // accepted(), not the kReady phase: a connection asked to QUIT before its greeting (one
  // message per connection) goes from EHLO straight to its transaction and QUIT.
  if (!c.reached_ready && session.accepted()) {
    c.reached_ready = true;
    c.pool->record_connection_ready(c.host_index);
    // Proven (again): the rest of its connections may open now (once per connection).
    activate(*c.pool);
    report_up(*c.pool);
  }
  if (session.phase() == smtp::SessionPhase::kClosed && session.auth_failed() && !c.failure_noted) {
    // The relay refused our credentials: retrying cannot help until the configuration
    // changes, so the route is down at once (no retry storm), with the server's reply.
    const auto& done = session.finished();
    smtp::Reply why = !done.empty() && !done.front().recipients.empty()
                          ? done.front().recipients.front().reply
                          : local_reply(kSecurityFailure, "authentication failed");
    c.failure_noted = true;
    counters_.count_connection_failure(ConnectionFailure::kAuth, c.pool->site);
    c.pool->mark_down(why, now_);
    report_if_paused(*c.pool);
  }
  if (session.phase() == smtp::SessionPhase::kClosed && !c.reached_ready) {
    // Refused greeting or EHLO: the pool remembers the server's own reply, so work it
    // defers later as a dead destination carries it.
    const auto& done = session.finished();
    const bool replied = !done.empty() && !done.front().recipients.empty();
    const smtp::Reply why =
        replied ? done.front().recipients.front().reply
                : local_reply(kNoAnswer, "greeting or EHLO refused by " + c.pool->destination().key());
    note_failure_if_never_ready(c, why,
                                c.tls && !c.tls->handshake_done() ? ConnectionFailure::kTls
                                : replied ? connection_failure_from_reply(why)
                                          : ConnectionFailure::kGreeting);
  }
  collect_outcomes(c);
  if (session.phase() == smtp::SessionPhase::kClosed) {
    // Send what the session still has to say (a QUIT after a refused greeting), then close.
    // Over TLS our side ends with a close_notify (RFC 8446 §6.1), queued once the session's
    // last bytes are encrypted, so it goes after them; the peer's is not waited for.
    if (c.tls && session.pending_output_bytes() == 0) c.tls->shutdown();
    if (has_output(c) || c.send_in_flight) {
      c.close_after_send = true;
      mark_dirty(slot);
      set_deadline(c);
    } else {
      begin_close(slot);
    }
    return;
  }
  if (session.can_accept_transaction()) {
    if (!c.pool->queue.empty()) feed_connection(slot);
    else if (session.idle()) activate(*c.pool);  // may be time to QUIT
  }
  if (has_output(c)) mark_dirty(slot);
  set_deadline(c);
}

void Shard::set_deadline(Connection& c) {
  const Timeouts& t = options_.timeouts;
  Seconds timeout = t.command;
  switch (c.session->awaiting()) {
    case smtp::Awaiting::kNothing:
      timeout = c.quit_requested ? t.command : c.pool->limits().idle_timeout;
      if (!c.quit_requested) c.idle_since = now_;
      break;
    case smtp::Awaiting::kGreeting: timeout = t.greeting; break;
    case smtp::Awaiting::kCommand:
      // Once ready, quitting with no transaction left, the command awaited is QUIT.
      timeout = c.quit_requested && c.reached_ready && c.session->queued_transactions() == 0
                    ? std::min(t.command, t.quit)
                    : t.command;
      break;
    case smtp::Awaiting::kDataStart: timeout = t.data_start; break;
    case smtp::Awaiting::kDataEnd: timeout = t.data_end; break;
  }
  if (c.send_in_flight || c.session->pending_output_bytes() > 0)
    timeout = std::max(timeout, t.data_block);
  c.deadline = now_ + to_duration(timeout);
}

void Shard::fail_connection(uint32_t slot, smtp::EnhancedCode code, const std::string& reason,
                            ConnectionFailure failure) {
  Connection& c = connections_[slot];
  if (c.state == Connection::State::kConnecting || c.state == Connection::State::kOpen) {
    // Record the failure before the session's outcomes are collected, so a destination
    // now found dead stops taking its not-attempted transactions back.
    // A close of our own making (drain timeout) says nothing about the host.
    if (code != kShutdown)
      note_failure_if_never_ready(c, local_reply(code, reason),
                                  c.tls && !c.tls->handshake_done() ? ConnectionFailure::kTls : failure);
    if (c.tls && !c.tls->handshake_done() && code != kShutdown) {
      // The server dropped or stalled the handshake: a TLS failure like any other, and an
      // opportunistic destination goes on in plaintext rather than failing this way again.
      counters_.count_tls_failure();
      const TransportSecurity& security = security_for(*c.pool);
      if (security.tls.mode == TlsPolicy::kOpportunistic && !security.implicit_tls)
        c.pool->note_starttls_failed(now_);
    }
    c.session->abort(code, reason);
  }
  begin_close(slot);
}

void Shard::note_failure_if_never_ready(Connection& c, const smtp::Reply& why,
                                        ConnectionFailure failure) {
  // A connection that never got through greeting and EHLO is a failure of the host;
  // counted once per connection, whatever path closes it.
  if (c.reached_ready || c.failure_noted) return;
  c.failure_noted = true;
  counters_.count_connection_failure(failure, c.pool->site);
  c.pool->record_connection_failure(c.host_index, why, now_);
  report_if_paused(*c.pool);
}

void Shard::begin_close(uint32_t slot) {
  Connection& c = connections_[slot];
  if (c.state == Connection::State::kClosing || c.state == Connection::State::kFree) return;
  if (c.state == Connection::State::kConnecting) --c.pool->connecting;
  if (c.session && c.session->phase() != smtp::SessionPhase::kClosed)
    c.session->abort(kConnectionLost, "connection closed");
  collect_outcomes(c);
  c.state = Connection::State::kClosing;
  DestinationPool& pool = *c.pool;
  pool.remove_connection(slot);
  activate(pool);
  if (c.ops_in_flight > 0) {
    // A multishot receive (and a stuck send) hold the socket open: cancel them all first.
    io_uring_sqe* sqe = ring_.sqe();
    io_uring_prep_cancel_fd(sqe, c.fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kCancel, slot, c.generation}.encode());
    ++c.ops_in_flight;
    c.cancel_submitted = true;
  }
  maybe_submit_close(slot);
}

void Shard::maybe_submit_close(uint32_t slot) {
  Connection& c = connections_[slot];
  if (c.state != Connection::State::kClosing || c.ops_in_flight != 0 || c.close_submitted) return;
  io_uring_sqe* sqe = ring_.sqe();
  io_uring_prep_close(sqe, c.fd);
  io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kClose, slot, c.generation}.encode());
  ++c.ops_in_flight;
  c.close_submitted = true;
}

void Shard::release(uint32_t slot) {
  Connection& c = connections_[slot];
  if (c.ops_in_flight != 0) return;  // the close completed first; the rest follow
  connections_.release(slot);
  counters_.count_connection_closed();
  wake_slot_waiter();
}

}  // namespace ringmail::engine

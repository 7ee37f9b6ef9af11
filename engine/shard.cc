#include "engine/shard.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "engine/completion_token.h"
#include "engine/shard_replies.h"

namespace ringmail::engine {
namespace {

// A 64-entry submission queue per shard would be submitted several times per loop turn
// with a thousand connections; 4096 entries hold a whole turn's sends.
constexpr unsigned kRingEntries = 4096;
// Provided receive buffers: replies are small, so 4 KiB each; 1024 of them cover every
// connection of a busy shard receiving in the same loop turn (must be a power of two).
constexpr unsigned kReceiveBuffers = 1024;
constexpr size_t kReceiveBufferBytes = 4096;
// Deadlines are checked this often; SMTP timeouts are seconds to minutes.
constexpr auto kDeadlineCheckInterval = std::chrono::milliseconds(50);

Clock::duration to_duration(Seconds s) {
  return std::chrono::duration_cast<Clock::duration>(s);
}

// The site a pool serves, for per-site counters: the domain of an MX pool, else the
// relay's configured name (its address when it has none).
std::string_view site_of(const Destination& d) {
  if (!d.mx_domain.empty()) return d.mx_domain;
  return d.tls_name.empty() ? std::string_view(d.host) : std::string_view(d.tls_name);
}

// Domains as the database stores them (storage: lower-cased at enqueue).
std::string lower_domain(std::string_view domain) {
  std::string out(domain);
  for (char& ch : out)
    if (ch >= 'A' && ch <= 'Z') ch = char(ch - 'A' + 'a');
  return out;
}



}  // namespace

Shard::Shard(unsigned index, const EngineOptions& options, ShardInbox& inbox, OutcomeSink* sink,
             DeliveryCounters& counters, RingFailureHandler on_ring_failure)
    : index_(index),
      options_(options),
      inbox_(inbox),
      sink_(sink),
      counters_(counters),
      on_ring_failure_(std::move(on_ring_failure)),
      ring_(kRingEntries) {
  counters_.sites().configure(options_.site_metrics.sites, options_.site_metrics.max_tracked_per_shard);
  if (options_.multishot_receive)
    receive_buffers_ = std::make_unique<ReceiveBufferRing>(ring_, kReceiveBuffers, kReceiveBufferBytes);
  multishot_receive_ = receive_buffers_ && receive_buffers_->available();
  // One SSL_CTX per security profile (verification is a property of the context), made
  // now so that a bad CA file is a start-up error.
  mx_security_ = options_.security;
  mx_security_.auth.reset();
  mx_security_.implicit_tls = false;
  tls_contexts_.resize(options_.route_security.size() + 1);
  for (size_t profile = 0; profile < tls_contexts_.size(); ++profile) {
    const TransportSecurity& security =
        profile == 0 ? options_.security : options_.route_security[profile - 1];
    if (security.tls.mode == TlsPolicy::kDisabled && !security.implicit_tls) continue;
    TlsPolicy policy = security.tls;
    if (policy.mode == TlsPolicy::kDisabled) policy.mode = TlsPolicy::kOpportunistic;  // implicit
    auto context = TlsClientContext::create(
        policy, policy.resume_sessions ? TlsClientContext::kDefaultMaxCachedSessions : 0);
    if (!context) throw std::runtime_error("TLS set-up failed: " + context.error());
    tls_contexts_[profile].emplace(std::move(*context));
  }
}

// ---------------------------------------------------------------------------- loop

void Shard::run() {
  now_ = Clock::now();
  next_deadline_check_ = now_ + kDeadlineCheckInterval;
  arm_inbox_read();
  take_inbox();
  while (true) {
    // The drain flag is read every turn: the inbox's eventfd is no longer watched once the
    // feeder has closed it, and a drain may come after that.
    if (!draining_ && inbox_.drain_requested()) begin_drain();
    // A close seen here (the eventfd wake may still be queued) is collected with the
    // last jobs now, so the shard never stops with work left in its inbox.
    if (!inbox_exhausted_ && inbox_.closed()) take_inbox();
    schedule_active_pools();
    flush_sends();
    if (finished()) break;

    __kernel_timespec wait = next_wait();
    io_uring_cqe* cqe = nullptr;
    // Waiting for several completions per wake was measured: ~15% more messages/s but
    // ~11% more CPU per message (the timer each bounded wait arms), so wake for one.
    int rc = io_uring_submit_and_wait_timeout(ring_.raw(), &cqe, 1, &wait, nullptr);
    counters_.count_ring_submissions(rc);
    if (rc > 0) submitted_ += unsigned(rc);
    if (options_.fail_ring_after_submissions != 0 && submitted_ >= options_.fail_ring_after_submissions)
      rc = -EIO;
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      fail_ring(rc);
      break;
    }
    now_ = Clock::now();
    unsigned head;
    unsigned count = 0;
    io_uring_for_each_cqe(ring_.raw(), head, cqe) {
      handle_completion(*cqe);
      ++count;
    }
    io_uring_cq_advance(ring_.raw(), count);
    counters_.count_ring_completions(count);
    if (now_ >= next_deadline_check_) {
      check_deadlines();
      next_deadline_check_ = now_ + kDeadlineCheckInterval;
    }
    // c-ares retries and gives up on its own clock; its next deadline bounds our wait.
    if (resolver_ && resolver_->pending() > 0) resolver_->on_timer();
  }
  quiesce();
}

void Shard::quiesce() {
  // The resolver's sockets are unwatched (polls removed) while the ring is still here.
  resolver_.reset();
  io_uring_submit(ring_.raw());
  // Connections are all closed when the loop ends normally; the inbox read may still be
  // armed, and the kernel would write its counter after we are gone. Cancel it and reap
  // until its completion has arrived (bounded: a broken ring must not hang the exit).
  if (!inbox_armed_) return;
  io_uring_sqe* sqe = ring_.sqe();
  io_uring_prep_cancel64(sqe, CompletionToken{OpKind::kInboxWake, 0, 0}.encode(), 0);
  io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kCancel, UINT32_MAX, 0}.encode());
  const auto give_up = Clock::now() + std::chrono::seconds(1);
  while (inbox_armed_ && Clock::now() < give_up) {
    __kernel_timespec wait{.tv_sec = 0, .tv_nsec = 10'000'000};
    io_uring_cqe* cqe = nullptr;
    io_uring_submit_and_wait_timeout(ring_.raw(), &cqe, 1, &wait, nullptr);
    unsigned head, count = 0;
    io_uring_for_each_cqe(ring_.raw(), head, cqe) {
      if (CompletionToken::decode(cqe->user_data).op == OpKind::kInboxWake) inbox_armed_ = false;
      ++count;
    }
    io_uring_cq_advance(ring_.raw(), count);
  }
}

__kernel_timespec Shard::next_wait() const {
  if (!active_pools_.empty()) return {.tv_sec = 0, .tv_nsec = 0};  // more scheduling to do
  Clock::time_point wake = next_deadline_check_;
  if (resolver_)
    if (auto dns_timeout = resolver_->next_timeout()) wake = std::min(wake, now_ + *dns_timeout);
  if (options_.pool.messages_per_second > 0)
    for (auto& [key, pool] : pools_) wake = std::min(wake, pool->next_token_time(now_));
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wake - Clock::now()).count();
  if (ns < 0) ns = 0;
  return {.tv_sec = ns / 1'000'000'000, .tv_nsec = ns % 1'000'000'000};
}

bool Shard::finished() const {
  if (!inbox_exhausted_) return false;
  if (connections_.in_use() != 0 || !mx_waiting_.empty()) return false;
  for (auto& [key, pool] : pools_)
    if (!pool->queue.empty()) return false;
  return true;
}

void Shard::arm_inbox_read() {
  io_uring_sqe* sqe = ring_.sqe();
  io_uring_prep_read(sqe, inbox_.eventfd(), &inbox_counter_, sizeof inbox_counter_, 0);
  io_uring_sqe_set_data64(sqe, CompletionToken{OpKind::kInboxWake, 0, 0}.encode());
  inbox_armed_ = true;
}

void Shard::take_inbox() {
  if (inbox_.drain_requested() && !draining_) begin_drain();
  // `closed` comes from under the inbox lock with the jobs: none can follow it.
  const bool closed = inbox_.take(incoming_);
  for (ShardJob& job : incoming_) {
    if (!job.destination.mx_domain.empty() && !draining_) {
      route_by_mx(std::move(job));
      continue;
    }
    DestinationPool& pool = pool_for(job.destination, job.destination_key);
    if (draining_) {
      give_up_not_attempted(std::move(job.transaction), stop_reply(), true);
    } else if (!pool.address_valid()) {
      give_up_not_attempted(std::move(job.transaction),
                            local_reply(kBadDestination,
                                        "destination " + pool.destination().key() +
                                            " is not a numeric address"),
                            false, pool.site);
    } else if (pool.dead(now_) && pool.connections.empty()) {
      report_paused_domain(pool, job.transaction);
      give_up_not_attempted(std::move(job.transaction), pool.last_failure(), false, pool.site);
    } else {
      stamp_queued(job.transaction);
      pool.queue.push_back(std::move(job.transaction));
      activate(pool);
    }
  }
  incoming_.clear();
  if (closed) {
    inbox_exhausted_ = true;
    // Nothing more will arrive: pools that ran dry can let their idle connections go.
    for (auto& [key, pool] : pools_) activate(*pool);
  }
}

void Shard::handle_completion(const io_uring_cqe& cqe) {
  CompletionToken token = CompletionToken::decode(cqe.user_data);
  if (token.op == OpKind::kDnsPoll) {
    on_dns_poll(cqe, token);
    return;
  }
  if (token.op == OpKind::kInboxWake) {
    inbox_armed_ = false;
    take_inbox();
    if (!inbox_exhausted_) arm_inbox_read();
    return;
  }
  Connection* connection = connections_.find(token.slot, token.generation);
  if (connection == nullptr) {
    // A completion for a connection that is gone. Slots are released only after their
    // last completion, so this is a defence, not a path we expect; a provided buffer it
    // carries must still go back to the kernel.
    if (token.op == OpKind::kRecv && (cqe.flags & IORING_CQE_F_BUFFER) && receive_buffers_)
      receive_buffers_->recycle(uint16_t(cqe.flags >> IORING_CQE_BUFFER_SHIFT));
    return;
  }
  switch (token.op) {
    case OpKind::kConnect: on_connect(token.slot, cqe.res); break;
    case OpKind::kSend: on_send(token.slot, cqe.res); break;
    case OpKind::kRecv: on_receive(token.slot, cqe); break;
    case OpKind::kCancel:
      --connection->ops_in_flight;
      maybe_submit_close(token.slot);
      break;
    case OpKind::kClose:
      --connection->ops_in_flight;
      release(token.slot);
      break;
    case OpKind::kInboxWake:
    case OpKind::kDnsPoll: break;
  }
}

// ---------------------------------------------------------------------------- pools

DestinationPool& Shard::pool_for(const Destination& destination, const std::string& key) {
  auto it = pools_.find(key);
  if (it == pools_.end()) {
    it = pools_.emplace(key, std::make_unique<DestinationPool>(destination, options_.pool)).first;
    it->second->site = &counters_.sites().slot_for(site_of(destination));
  }
  return *it->second;
}

void Shard::activate(DestinationPool& pool) {
  if (pool.in_active_list) return;
  pool.in_active_list = true;
  active_pools_.push_back(&pool);
}

void Shard::schedule_active_pools() {
  // Pools whose rate limit has refilled need another look even without an event.
  if (options_.pool.messages_per_second > 0)
    for (auto& [key, pool] : pools_)
      if (!pool->queue.empty()) activate(*pool);
  // Scheduling may activate pools again; those wait for the next turn.
  scheduling_.clear();
  scheduling_.swap(active_pools_);
  for (DestinationPool* pool : scheduling_) {
    pool->in_active_list = false;
    schedule_pool(*pool);
  }
}

void Shard::schedule_pool(DestinationPool& pool) {
  // Existing connections first: a reused connection costs the server nothing new.
  for (size_t i = 0; i < pool.connections.size() && !pool.queue.empty(); ++i)
    feed_connection(pool.connections[i]);
  // Then open connections for the work still waiting, one per waiting transaction, up to
  // the limit. Connections still connecting have already taken one transaction each.
  const size_t max_connections = pool.failing(now_) ? 1 : pool.limits().max_connections;
  while (!draining_ && !pool.queue.empty() && pool.connections.size() < max_connections) {
    if (pool.dead(now_)) {
      defer_queue_of_dead_pool(pool);
      break;
    }
    size_t before = pool.queue.size();
    open_connection(pool);
    if (pool.queue.size() == before) break;  // rate limited or could not open
  }
  // No more work will come: idle connections close now rather than at the idle timeout.
  if ((inbox_exhausted_ || draining_) && pool.queue.empty()) {
    for (uint32_t slot : pool.connections) {
      Connection& c = connections_[slot];
      if (c.state == Connection::State::kOpen && c.session->idle() && !c.quit_requested) {
        c.quit_requested = true;
        c.session->quit();
        mark_dirty(slot);
        set_deadline(c);
      }
    }
  }
}

void Shard::feed_connection(uint32_t slot) {
  Connection& c = connections_[slot];
  if (c.state != Connection::State::kConnecting && c.state != Connection::State::kOpen) return;
  if (c.quit_requested || draining_) return;
  DestinationPool& pool = *c.pool;
  smtp::ClientSession& session = *c.session;
  bool added = false;
  const uint64_t max_messages = pool.limits().max_messages_per_connection;
  while (!pool.queue.empty() && session.can_accept_transaction() &&
         (max_messages == 0 || c.transactions_assigned < max_messages) &&
         pool.take_send_token(now_)) {
    session.add_transaction(std::move(pool.queue.front()));
    pool.queue.pop_front();
    ++c.transactions_assigned;
    added = true;
  }
  if (max_messages != 0 && c.transactions_assigned >= max_messages && !c.quit_requested) {
    // A fresh connection after this many messages, as Postfix's smtp_connection_reuse_count_limit.
    c.quit_requested = true;
    session.quit();
    added = true;
  }
  if (added && c.state == Connection::State::kOpen) {
    mark_dirty(slot);
    set_deadline(c);
  }
}

void Shard::defer_queue_of_dead_pool(DestinationPool& pool) {
  while (!pool.queue.empty()) {
    smtp::Transaction txn = std::move(pool.queue.front());
    pool.queue.pop_front();
    report_paused_domain(pool, txn);
    give_up_not_attempted(std::move(txn), pool.last_failure(), false, pool.site);
  }
}

void Shard::report_if_paused(DestinationPool& pool) {
  if (!sink_ || !pool.dead(now_)) return;
  const Clock::time_point until = pool.probe_time();
  if (until == Clock::time_point::max()) return;  // no numeric host: nothing to probe
  // Connections failing together each push their host's probe time a little: one report
  // per pause, and another only when a probe failed (a new pause).
  if (pool.paused_reported != Clock::time_point{} &&
      until < pool.paused_reported + to_duration(pool.limits().dead_destination_pause) / 2)
    return;
  pool.paused_reported = until;
  // Once per pause, so every report of it carries the same time.
  pool.paused_until_wall = std::chrono::system_clock::now() +
                           std::chrono::duration_cast<std::chrono::system_clock::duration>(until - now_);
  pool.paused_domains.clear();
  pool.up_reported = false;
  std::vector<std::string> domains;
  std::string domain = lower_domain(pool.destination().mx_domain);
  if (!domain.empty()) {
    pool.paused_domains.push_back(domain);
    domains.push_back(std::move(domain));
  }
  report_destination(pool, true, std::move(domains));
}

void Shard::report_paused_domain(DestinationPool& pool, const smtp::Transaction& transaction) {
  // Bounds the reports of a relay serving many domains; past it, recipients of the rest
  // wait for their own backoff.
  constexpr size_t kMaxDomainsPerPause = 256;
  if (!sink_ || pool.paused_reported == Clock::time_point{}) return;
  // Every domain of the transaction: a relay's transaction mixes them, and each one's
  // queued recipients are to wait for the pause.
  std::vector<std::string> fresh;
  std::string_view previous;  // consecutive recipients mostly share a domain
  for (const std::string& address : transaction.recipients) {
    if (pool.paused_domains.size() >= kMaxDomainsPerPause) break;
    const size_t at = address.rfind('@');
    if (at == std::string::npos) continue;
    const std::string_view raw = std::string_view(address).substr(at + 1);
    if (raw.empty() || raw == previous) continue;
    previous = raw;
    std::string domain = lower_domain(raw);
    if (std::find(pool.paused_domains.begin(), pool.paused_domains.end(), domain) !=
        pool.paused_domains.end())
      continue;
    pool.paused_domains.push_back(domain);
    fresh.push_back(std::move(domain));
  }
  if (!fresh.empty()) report_destination(pool, true, std::move(fresh));
}

void Shard::report_up(DestinationPool& pool) {
  if (!sink_ || (pool.up_reported && pool.paused_reported == Clock::time_point{})) return;
  pool.up_reported = true;
  pool.paused_reported = {};
  pool.paused_domains.clear();
  report_destination(pool, false, {});
}

void Shard::report_destination(DestinationPool& pool, bool paused,
                               std::vector<std::string> domains) {
  DestinationStateChange change;
  change.name = std::string(site_of(pool.destination()));
  change.domains = std::move(domains);
  change.paused = paused;
  if (paused) {
    change.paused_until = pool.paused_until_wall;
    change.reason = pool.last_failure();
  }
  sink_->on_destination_state(index_, change);
}

// ---------------------------------------------------------------------------- connections

void Shard::open_connection(DestinationPool& pool) {
  if (pool.limits().messages_per_second > 0 && pool.next_token_time(now_) > now_) return;
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
  if (!c.reached_ready && session.phase() == smtp::SessionPhase::kReady) {
    c.reached_ready = true;
    c.pool->record_connection_ready(c.host_index);
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
        c.pool->starttls_broken = true;
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
}

}  // namespace ringmail::engine

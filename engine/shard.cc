// A shard's construction, its event loop (submit, wait, reap), the inbox it takes work
// from, and the dispatch of each completion to the part of the Shard that owns it.
#include "engine/shard.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "engine/completion_token.h"
#include "engine/shard_internal.h"
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
  connection_cap_ = options_.max_connections_per_shard;
  if (connection_cap_ == 0) {
    // What the file limit leaves each shard, keeping 256 for the database, the log, the
    // metrics listener and its clients, DNS sockets and the rings.
    rlimit files{};
    const rlim_t soft = ::getrlimit(RLIMIT_NOFILE, &files) == 0 ? files.rlim_cur : 1024;
    const unsigned shards = std::max(1u, options_.shards);
    const size_t usable = soft == RLIM_INFINITY ? size_t{1} << 20 : size_t(soft);
    connection_cap_ = std::max<size_t>(16, usable > 256 ? (usable - 256) / shards : 0);
  }
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
  next_pool_sweep_ = now_ + to_duration(options_.idle_pool_sweep);
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
    if (now_ >= next_pool_sweep_) {
      sweep_idle_pools();
      next_pool_sweep_ = now_ + to_duration(options_.idle_pool_sweep);
    }
    // c-ares retries and gives up on its own clock; its next deadline bounds our wait.
    if (resolver_ && resolver_->pending() > 0) resolver_->on_timer();
  }
  quiesce();
  counters_.set_destination_pools(0);  // the pools go with the shard
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
  if (!token_waits_.empty()) wake = std::min(wake, token_waits_.top().first);
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
      queue_or_park(pool, std::move(job.transaction));
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

}  // namespace ringmail::engine

// Counters of what the engine did, summed over shards for the progress bar and summary.
// Each shard writes its own copy (relaxed atomics, one writer); readers sum snapshots.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "engine/site_counters.h"
#include "smtp/reply.h"

namespace ringmail::engine {

// Upper bounds (seconds) of the transaction-duration histogram buckets; one more bucket
// (+Inf) follows. Fixed, so every shard's histogram sums with every other's. From a
// loopback sink (~1 ms) to RFC 5321's 10-minute end-of-data timeout.
inline constexpr std::array<double, 16> kTransactionDurationBounds = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120, 600};

struct DurationHistogram {
  std::array<uint64_t, kTransactionDurationBounds.size() + 1> buckets{};  // not cumulative
  uint64_t count = 0;
  double sum_seconds = 0;
  void add(const DurationHistogram& other);
};

// Why a connection failed before greeting and EHLO completed: a small fixed set, so it
// can be a metric label. Each failed connection is counted once, under one reason.
enum class ConnectionFailure : uint8_t {
  kRefused,      // ECONNREFUSED: nothing listens there
  kUnreachable,  // no route to the network or host
  kTimeout,      // connect, greeting or EHLO reply timed out
  kClosed,       // the peer closed or reset the connection before EHLO's reply
  kGreeting,     // the server refused the session before it was ready (4xx/5xx, 421 to
                 // the greeting, EHLO/HELO, STARTTLS, or a temporary AUTH failure)
  kTls,          // the TLS handshake failed or stalled; TLS required but not offered
  kProtocol,     // a malformed, oversized or unexpected reply
  kAuth,         // the server refused our credentials (or offered no usable mechanism)
  kResources,    // a local shortage: EMFILE, ENFILE, ENOBUFS, ENOMEM
  kOther,
};
inline constexpr size_t kConnectionFailureReasons = size_t(ConnectionFailure::kOther) + 1;
// The metric label: "refused", "unreachable", "timeout", ...
const char* to_string(ConnectionFailure reason);
// The reason of a failed socket(), connect, send or receive (`error` a positive errno).
ConnectionFailure connection_failure_from_errno(int error);
// The reason of a session that closed before reaching ready, from the reply deciding it:
// a server reply is kGreeting, a local one is classified by its enhanced code.
ConnectionFailure connection_failure_from_reply(const smtp::Reply& why);

struct DeliverySnapshot {
  uint64_t recipients_delivered = 0;
  uint64_t recipients_deferred = 0;
  uint64_t recipients_bounced = 0;
  uint64_t recipients_not_attempted = 0;  // dropped at shutdown before any attempt
  // Given back unsent because their destination had a backlog (PoolLimits::max_backlog):
  // the source keeps them for later. A recipient may be parked more than once in a run.
  uint64_t recipients_parked = 0;
  uint64_t transactions_finished = 0;     // messages: one per SMTP transaction (not those
                                          // dropped unsent at a stop, nor parked ones)
  uint64_t transactions_delivered = 0;    // ... of which at least one recipient delivered
  uint64_t connections_opened = 0;
  uint64_t connection_failures = 0;  // the sum of connection_failures_by_reason
  std::array<uint64_t, kConnectionFailureReasons> connection_failures_by_reason{};
  std::array<uint64_t, 600> recipients_by_reply_code{};  // index: reply code deciding it (0: local)
  // Recipients by the class of the RFC 3463 enhanced code deciding them: index 2, 4, 5;
  // index 0 when the reply had none.
  std::array<uint64_t, 6> recipients_by_enhanced_class{};
  uint64_t connections_closed = 0;  // open = opened - closed
  uint64_t ring_submissions = 0;    // SQEs the kernel took (io_uring_submit* results)
  uint64_t tls_handshakes = 0;          // completed, of which...
  uint64_t tls_handshakes_resumed = 0;  // ... resumed a cached session
  uint64_t tls_failures = 0;            // handshakes that failed
  uint64_t dns_lookups = 0;             // routes looked up (cache misses)
  uint64_t dns_cache_hits = 0;          // routes answered from the cache or a lookup in flight
  uint64_t dns_failures = 0;            // lookups that ended in a temporary failure
  uint64_t ring_completions = 0;    // CQEs reaped
  uint64_t destination_pools = 0;   // pools the shards hold now (a gauge; idle ones are swept)
  // From the shard taking a transaction off its inbox to its outcome, one sample per
  // transaction that was queued on a pool (resolution: one loop turn).
  DurationHistogram transaction_duration;
  // MX route lookups that went to DNS, from the first query to the route (MX and the
  // exchangers' addresses); not cache hits, not lookups cut short by a drain.
  DurationHistogram dns_lookup_duration;
  // Per destination site (see SiteCounters): named sites sorted by name, and the rest.
  // Bounded: each shard names at most its configured sites plus SiteCounters' capacity.
  std::vector<SiteSample> sites;
  SiteCounts site_other;

  // Recipients a transaction was made for and ended: what a rate of work done counts
  // (not those dropped unsent at a stop, nor parked ones).
  uint64_t recipients_attempted() const {
    return recipients_delivered + recipients_deferred + recipients_bounced;
  }
  uint64_t recipients_finished() const {
    return recipients_delivered + recipients_deferred + recipients_bounced + recipients_not_attempted;
  }
  // Every recipient taken is one of these: finished, or parked for the source to offer
  // again (so taken - accounted is what is still in flight).
  uint64_t recipients_accounted() const { return recipients_finished() + recipients_parked; }
  void add(const DeliverySnapshot& other);
};

class DeliveryCounters {
 public:
  // Writer side: only the owning shard thread calls these.
  void count_recipient(int reply_code, int status /*smtp::RecipientStatus*/);
  // As above, also counting the enhanced code's class.
  void count_recipient(const smtp::Reply& reply, int status /*smtp::RecipientStatus*/);
  void count_not_attempted(uint64_t recipients);
  void count_parked(uint64_t recipients);
  void count_transaction(bool any_delivered);
  void count_connection_opened();
  // Also counted for `site` when given (the pool's site slot).
  void count_connection_failure(ConnectionFailure reason, SiteSlot* site = nullptr) {
    bump(failures_by_reason_[size_t(reason)]);
    if (site) site->count_connection_failure();
  }
  void count_connection_closed();
  void count_ring_submissions(int submitted) { if (submitted > 0) bump(ring_submissions_, unsigned(submitted)); }
  void count_ring_completions(unsigned reaped) { bump(ring_completions_, reaped); }
  void count_tls_handshake(bool resumed) {
    bump(tls_handshakes_);
    if (resumed) bump(tls_resumed_);
  }
  void count_tls_failure() { bump(tls_failures_); }
  void set_destination_pools(size_t pools) { pools_.store(pools, std::memory_order_relaxed); }
  // The shard's resolver keeps its own totals; they are published as they are.
  void set_dns_totals(uint64_t lookups, uint64_t cache_hits, uint64_t failures) {
    dns_lookups_.store(lookups, std::memory_order_relaxed);
    dns_cache_hits_.store(cache_hits, std::memory_order_relaxed);
    dns_failures_.store(failures, std::memory_order_relaxed);
  }
  // An MX route lookup that went to DNS took `elapsed`.
  void count_dns_lookup_duration(std::chrono::steady_clock::duration elapsed) {
    dns_duration_.observe(elapsed);
  }
  // Per-site counters; writer side as above. Snapshots read them.
  SiteCounters& sites() { return sites_; }
  // A transaction's time from being queued on a pool to its outcome. The shard carries
  // the queued time in smtp::Transaction::caller_stamp and reads its loop-turn clock, so
  // timing costs neither a lookup nor a clock read.
  void count_transaction_duration(std::chrono::steady_clock::duration elapsed) {
    transaction_duration_.observe(elapsed);
  }
  // Reader side: any thread.
  DeliverySnapshot snapshot() const;

 private:
  static void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::atomic<uint64_t> delivered_{0}, deferred_{0}, bounced_{0}, not_attempted_{0},
      parked_{0};
  std::atomic<uint64_t> transactions_{0}, transactions_delivered_{0};
  // One writer; observe() costs a bucket search and two relaxed stores.
  struct AtomicHistogram {
    std::array<std::atomic<uint64_t>, kTransactionDurationBounds.size() + 1> buckets{};
    std::atomic<uint64_t> sum_ns{0};
    void observe(std::chrono::steady_clock::duration elapsed);
    DurationHistogram read() const;
  };
  std::atomic<uint64_t> opened_{0};
  std::array<std::atomic<uint64_t>, kConnectionFailureReasons> failures_by_reason_{};
  std::array<std::atomic<uint64_t>, 600> by_code_{};
  std::array<std::atomic<uint64_t>, 6> by_enhanced_class_{};
  std::atomic<uint64_t> closed_{0}, ring_submissions_{0}, ring_completions_{0};
  std::atomic<uint64_t> tls_handshakes_{0}, tls_resumed_{0}, tls_failures_{0};
  std::atomic<uint64_t> dns_lookups_{0}, dns_cache_hits_{0}, dns_failures_{0};
  std::atomic<uint64_t> pools_{0};
  AtomicHistogram transaction_duration_, dns_duration_;
  SiteCounters sites_;
};

}  // namespace ringmail::engine

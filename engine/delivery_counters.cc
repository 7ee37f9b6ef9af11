#include "engine/delivery_counters.h"

#include <cerrno>
#include <utility>

#include "smtp/transaction.h"

namespace ringmail::engine {
namespace {

// Both sorted by name; the result too.
void merge_sites(std::vector<SiteSample>& into, const std::vector<SiteSample>& from) {
  if (from.empty()) return;
  std::vector<SiteSample> merged;
  merged.reserve(into.size() + from.size());
  size_t i = 0, j = 0;
  while (i < into.size() || j < from.size()) {
    if (j == from.size() || (i < into.size() && into[i].name < from[j].name)) {
      merged.push_back(std::move(into[i++]));
    } else if (i == into.size() || from[j].name < into[i].name) {
      merged.push_back(from[j++]);
    } else {
      merged.push_back(std::move(into[i++]));
      merged.back().counts.add(from[j++].counts);
    }
  }
  into = std::move(merged);
}

}  // namespace

const char* to_string(ConnectionFailure reason) {
  switch (reason) {
    case ConnectionFailure::kRefused: return "refused";
    case ConnectionFailure::kUnreachable: return "unreachable";
    case ConnectionFailure::kTimeout: return "timeout";
    case ConnectionFailure::kClosed: return "closed";
    case ConnectionFailure::kGreeting: return "greeting";
    case ConnectionFailure::kTls: return "tls";
    case ConnectionFailure::kProtocol: return "protocol";
    case ConnectionFailure::kAuth: return "auth";
    case ConnectionFailure::kResources: return "resources";
    case ConnectionFailure::kOther: return "other";
  }
  return "other";
}

ConnectionFailure connection_failure_from_errno(int error) {
  switch (error) {
    case ECONNREFUSED: return ConnectionFailure::kRefused;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENETDOWN:
    case EHOSTDOWN: return ConnectionFailure::kUnreachable;
    case ETIMEDOUT: return ConnectionFailure::kTimeout;
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE: return ConnectionFailure::kClosed;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
    case EADDRNOTAVAIL: return ConnectionFailure::kResources;  // no local port left
    default: return ConnectionFailure::kOther;
  }
}

ConnectionFailure connection_failure_from_reply(const smtp::Reply& why) {
  if (why.code != 0) return ConnectionFailure::kGreeting;
  // Local replies (smtp/ and engine/shard_replies.h): 4.4.1 no answer, 4.4.2 lost,
  // 4.4.7 timed out, 4.5.0 protocol error, 4.7.x TLS or credentials over plaintext.
  const smtp::EnhancedCode& e = why.enhanced;
  if (e.subject == 4 && e.detail == 7) return ConnectionFailure::kTimeout;
  if (e.subject == 4 && e.detail == 2) return ConnectionFailure::kClosed;
  if (e.subject == 5 && e.detail == 0) return ConnectionFailure::kProtocol;
  if (e.subject == 7) return ConnectionFailure::kTls;
  return ConnectionFailure::kOther;
}

void DurationHistogram::add(const DurationHistogram& other) {
  for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += other.buckets[i];
  count += other.count;
  sum_seconds += other.sum_seconds;
}

void DeliveryCounters::AtomicHistogram::observe(std::chrono::steady_clock::duration elapsed) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
  const uint64_t elapsed_ns = ns > 0 ? uint64_t(ns) : 0;
  const double seconds = double(elapsed_ns) * 1e-9;
  size_t bucket = 0;
  while (bucket < kTransactionDurationBounds.size() && seconds > kTransactionDurationBounds[bucket])
    ++bucket;
  bump(buckets[bucket]);
  bump(sum_ns, elapsed_ns);
}

DurationHistogram DeliveryCounters::AtomicHistogram::read() const {
  // The count is the sum of the buckets read, never a separate counter, so a scrape racing
  // an observation still gets a histogram whose +Inf bucket equals its count.
  DurationHistogram h;
  h.sum_seconds = double(sum_ns.load(std::memory_order_relaxed)) * 1e-9;
  for (size_t i = 0; i < buckets.size(); ++i) {
    h.buckets[i] = buckets[i].load(std::memory_order_relaxed);
    h.count += h.buckets[i];
  }
  return h;
}

void DeliverySnapshot::add(const DeliverySnapshot& other) {
  recipients_delivered += other.recipients_delivered;
  recipients_deferred += other.recipients_deferred;
  recipients_bounced += other.recipients_bounced;
  recipients_not_attempted += other.recipients_not_attempted;
  recipients_parked += other.recipients_parked;
  transactions_finished += other.transactions_finished;
  transactions_delivered += other.transactions_delivered;
  connections_opened += other.connections_opened;
  connection_failures += other.connection_failures;
  for (size_t i = 0; i < connection_failures_by_reason.size(); ++i)
    connection_failures_by_reason[i] += other.connection_failures_by_reason[i];
  for (size_t i = 0; i < recipients_by_reply_code.size(); ++i)
    recipients_by_reply_code[i] += other.recipients_by_reply_code[i];
  for (size_t i = 0; i < recipients_by_enhanced_class.size(); ++i)
    recipients_by_enhanced_class[i] += other.recipients_by_enhanced_class[i];
  connections_closed += other.connections_closed;
  ring_submissions += other.ring_submissions;
  tls_handshakes += other.tls_handshakes;
  tls_handshakes_resumed += other.tls_handshakes_resumed;
  tls_failures += other.tls_failures;
  dns_lookups += other.dns_lookups;
  dns_cache_hits += other.dns_cache_hits;
  dns_failures += other.dns_failures;
  ring_completions += other.ring_completions;
  destination_pools += other.destination_pools;
  transaction_duration.add(other.transaction_duration);
  dns_lookup_duration.add(other.dns_lookup_duration);
  merge_sites(sites, other.sites);
  site_other.add(other.site_other);
}

void DeliveryCounters::count_recipient(int reply_code, int status) {
  switch (smtp::RecipientStatus(status)) {
    case smtp::RecipientStatus::kDelivered: bump(delivered_); break;
    case smtp::RecipientStatus::kDeferred: bump(deferred_); break;
    case smtp::RecipientStatus::kBounced: bump(bounced_); break;
  }
  if (reply_code < 0 || reply_code >= int(by_code_.size())) reply_code = 0;
  bump(by_code_[reply_code]);
}

void DeliveryCounters::count_recipient(const smtp::Reply& reply, int status) {
  count_recipient(reply.code, status);
  unsigned klass = reply.enhanced.klass;
  bump(by_enhanced_class_[klass < by_enhanced_class_.size() ? klass : 0]);
}

void DeliveryCounters::count_not_attempted(uint64_t recipients) { bump(not_attempted_, recipients); }
void DeliveryCounters::count_parked(uint64_t recipients) { bump(parked_, recipients); }

void DeliveryCounters::count_transaction(bool any_delivered) {
  bump(transactions_);
  if (any_delivered) bump(transactions_delivered_);
}

void DeliveryCounters::count_connection_opened() { bump(opened_); }
void DeliveryCounters::count_connection_closed() { bump(closed_); }

DeliverySnapshot DeliveryCounters::snapshot() const {
  DeliverySnapshot s;
  s.recipients_delivered = delivered_.load(std::memory_order_relaxed);
  s.recipients_deferred = deferred_.load(std::memory_order_relaxed);
  s.recipients_bounced = bounced_.load(std::memory_order_relaxed);
  s.recipients_not_attempted = not_attempted_.load(std::memory_order_relaxed);
  s.recipients_parked = parked_.load(std::memory_order_relaxed);
  s.transactions_finished = transactions_.load(std::memory_order_relaxed);
  s.transactions_delivered = transactions_delivered_.load(std::memory_order_relaxed);
  s.connections_opened = opened_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < failures_by_reason_.size(); ++i) {
    s.connection_failures_by_reason[i] = failures_by_reason_[i].load(std::memory_order_relaxed);
    s.connection_failures += s.connection_failures_by_reason[i];
  }
  for (size_t i = 0; i < by_code_.size(); ++i)
    s.recipients_by_reply_code[i] = by_code_[i].load(std::memory_order_relaxed);
  for (size_t i = 0; i < by_enhanced_class_.size(); ++i)
    s.recipients_by_enhanced_class[i] = by_enhanced_class_[i].load(std::memory_order_relaxed);
  s.connections_closed = closed_.load(std::memory_order_relaxed);
  s.ring_submissions = ring_submissions_.load(std::memory_order_relaxed);
  s.tls_handshakes = tls_handshakes_.load(std::memory_order_relaxed);
  s.tls_handshakes_resumed = tls_resumed_.load(std::memory_order_relaxed);
  s.tls_failures = tls_failures_.load(std::memory_order_relaxed);
  s.dns_lookups = dns_lookups_.load(std::memory_order_relaxed);
  s.dns_cache_hits = dns_cache_hits_.load(std::memory_order_relaxed);
  s.dns_failures = dns_failures_.load(std::memory_order_relaxed);
  s.ring_completions = ring_completions_.load(std::memory_order_relaxed);
  s.destination_pools = pools_.load(std::memory_order_relaxed);
  s.transaction_duration = transaction_duration_.read();
  s.dns_lookup_duration = dns_duration_.read();
  sites_.read(s.sites, s.site_other);
  return s;
}

}  // namespace ringmail::engine

#include "engine/delivery_counters.h"

#include "smtp/transaction.h"

namespace ringmail::engine {

void DeliverySnapshot::add(const DeliverySnapshot& other) {
  recipients_delivered += other.recipients_delivered;
  recipients_deferred += other.recipients_deferred;
  recipients_bounced += other.recipients_bounced;
  recipients_not_attempted += other.recipients_not_attempted;
  transactions_finished += other.transactions_finished;
  transactions_delivered += other.transactions_delivered;
  connections_opened += other.connections_opened;
  connection_failures += other.connection_failures;
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
  for (size_t i = 0; i < transaction_duration.buckets.size(); ++i)
    transaction_duration.buckets[i] += other.transaction_duration.buckets[i];
  transaction_duration.count += other.transaction_duration.count;
  transaction_duration.sum_seconds += other.transaction_duration.sum_seconds;
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

void DeliveryCounters::note_transaction_finished(uint64_t transaction_id,
                                                 std::chrono::steady_clock::time_point now) {
  auto it = queued_at_.find(transaction_id);
  if (it == queued_at_.end()) return;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now - it->second).count();
  queued_at_.erase(it);
  const uint64_t elapsed_ns = ns > 0 ? uint64_t(ns) : 0;
  const double seconds = double(elapsed_ns) * 1e-9;
  size_t bucket = 0;
  while (bucket < kTransactionDurationBounds.size() && seconds > kTransactionDurationBounds[bucket])
    ++bucket;
  bump(duration_buckets_[bucket]);
  bump(duration_sum_ns_, elapsed_ns);
}

void DeliveryCounters::count_not_attempted(uint64_t recipients) { bump(not_attempted_, recipients); }

void DeliveryCounters::count_transaction(bool any_delivered) {
  bump(transactions_);
  if (any_delivered) bump(transactions_delivered_);
}

void DeliveryCounters::count_connection_opened() { bump(opened_); }
void DeliveryCounters::count_connection_failure() { bump(failures_); }
void DeliveryCounters::count_connection_closed() { bump(closed_); }

DeliverySnapshot DeliveryCounters::snapshot() const {
  DeliverySnapshot s;
  s.recipients_delivered = delivered_.load(std::memory_order_relaxed);
  s.recipients_deferred = deferred_.load(std::memory_order_relaxed);
  s.recipients_bounced = bounced_.load(std::memory_order_relaxed);
  s.recipients_not_attempted = not_attempted_.load(std::memory_order_relaxed);
  s.transactions_finished = transactions_.load(std::memory_order_relaxed);
  s.transactions_delivered = transactions_delivered_.load(std::memory_order_relaxed);
  s.connections_opened = opened_.load(std::memory_order_relaxed);
  s.connection_failures = failures_.load(std::memory_order_relaxed);
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
  // The count is the sum of the buckets read, never a separate counter, so a scrape racing
  // an observation still gets a histogram whose +Inf bucket equals its count.
  s.transaction_duration.sum_seconds = double(duration_sum_ns_.load(std::memory_order_relaxed)) * 1e-9;
  for (size_t i = 0; i < duration_buckets_.size(); ++i) {
    s.transaction_duration.buckets[i] = duration_buckets_[i].load(std::memory_order_relaxed);
    s.transaction_duration.count += s.transaction_duration.buckets[i];
  }
  return s;
}

}  // namespace ringmail::engine

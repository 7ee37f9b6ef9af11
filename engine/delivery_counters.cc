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

void DeliveryCounters::count_not_attempted(uint64_t recipients) { bump(not_attempted_, recipients); }

void DeliveryCounters::count_transaction(bool any_delivered) {
  bump(transactions_);
  if (any_delivered) bump(transactions_delivered_);
}

void DeliveryCounters::count_connection_opened() { bump(opened_); }
void DeliveryCounters::count_connection_failure() { bump(failures_); }

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
  return s;
}

}  // namespace ringmail::engine

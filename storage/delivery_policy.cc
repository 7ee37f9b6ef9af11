#include "storage/delivery_policy.h"

#include <algorithm>
#include <cmath>

namespace ringmail::storage {

bool means_bad_mailbox(const smtp::EnhancedCode& code) {
  // 5.1.1 bad destination mailbox address; 5.1.10 recipient address has null MX (RFC 7505).
  return code.klass == 5 && code.subject == 1 && (code.detail == 1 || code.detail == 10);
}

Seconds backoff_delay(const RetrySchedule& schedule, unsigned attempts, double random_unit) {
  const unsigned n = std::max(attempts, 1u) - 1;
  double delay = schedule.first_delay.count() * std::pow(schedule.factor, static_cast<double>(n));
  if (!std::isfinite(delay)) delay = schedule.max_delay.count();
  delay = std::min(delay, schedule.max_delay.count());
  const double jitter = std::clamp(schedule.jitter, 0.0, 1.0);
  delay *= 1.0 - jitter * std::clamp(random_unit, 0.0, 1.0);
  return Seconds(delay);
}

PolicyDecision decide(const AttemptFacts& facts, const RetrySchedule& schedule,
                      double random_unit) {
  PolicyDecision d;
  // Nothing reached a server because the run was stopping (the engine's 4.3.2 "shutting
  // down"): no attempt to count, due again at once. Not attempted for any other reason
  // (the destination is down, a connection could not be made) is a deferral like any
  // connection failure, so a dead host is not retried in a tight loop.
  if (facts.not_attempted && smtp::is_stop_reply(facts.reply)) {
    d.state = RecipientState::kQueued;
    d.counts_attempt = false;
    d.next_attempt_at_ms = facts.now_ms;
    return d;
  }
  // Parked because the destination had a backlog: not an attempt either, and due again
  // once that backlog has had time to go down.
  if (facts.not_attempted && facts.retry_after_ms > 0) {
    d.state = RecipientState::kQueued;
    d.counts_attempt = false;
    d.next_attempt_at_ms = facts.now_ms + facts.retry_after_ms;
    return d;
  }
  const smtp::Reply& r = facts.reply;
  if (facts.status == smtp::RecipientStatus::kDelivered) {
    d.state = RecipientState::kDelivered;
    return d;
  }
  // The engine decides what is permanent: it defers a whole session a server refused
  // (554 greeting, 535 to AUTH), since the recipients are not at fault, and a 552 to RCPT
  // (RFC 5321 4.5.3.1.10), so a 5xx code alone does not bounce.
  bool permanent = facts.status == smtp::RecipientStatus::kBounced;
  // 5.2.2 "mailbox full" is a persistent transient condition (RFC 3463 X.2.2): worth
  // another try whatever the basic code, as most large receivers say 552 5.2.2 for it.
  if (permanent && r.enhanced.klass == 5 && r.enhanced.subject == 2 && r.enhanced.detail == 2)
    permanent = false;
  if (permanent) {
    d.state = RecipientState::kBounced;
    d.suppress_address = facts.about_recipient && means_bad_mailbox(r.enhanced);
    return d;
  }
  // Deferred: 4xx, 421, or a local failure (code 0: connection refused, lost, timeout).
  const int64_t age_limit =
      facts.first_due_at_ms + static_cast<int64_t>(schedule.max_age.count() * 1000.0);
  if (facts.now_ms >= age_limit) {
    d.state = RecipientState::kExpired;
    return d;
  }
  const Seconds wait = backoff_delay(schedule, facts.attempts_before + 1, random_unit);
  d.state = RecipientState::kDeferred;
  d.next_attempt_at_ms = facts.now_ms + static_cast<int64_t>(std::llround(wait.count() * 1000.0));
  return d;
}

const char* to_string(Synchronous s) { return s == Synchronous::kFull ? "full" : "normal"; }

}  // namespace ringmail::storage

// The failure policy, apart from the protocol and the database: what an SMTP outcome
// means for a recipient (delivered, try again later, give up, suppress the address) and
// when the next attempt is. Pure functions; storage/README.md has the table.
#pragma once

#include <cstdint>

#include "smtp/reply.h"
#include "smtp/transaction.h"
#include "storage/recipient_state.h"
#include "storage/storage_options.h"

namespace ringmail::storage {

// How one attempt went, as far as the policy cares.
struct AttemptFacts {
  smtp::RecipientStatus status = smtp::RecipientStatus::kDeferred;
  smtp::Reply reply;           // code 0: failed locally (connection lost, timeout...)
  bool not_attempted = false;  // nothing of the transaction reached the server
  // With not_attempted: the engine parked it (its destination had a backlog) and asks
  // for it again after this long.
  int64_t retry_after_ms = 0;
  // The reply answered this recipient's own RCPT (or is its domain's null MX): only then
  // does a bad-mailbox code put the address on the suppression list.
  bool about_recipient = false;
  unsigned attempts_before = 0;  // attempts counted before this one
  int64_t now_ms = 0;
  int64_t first_due_at_ms = 0;  // when the recipient was first due (enqueue or send-at)
};

struct PolicyDecision {
  RecipientState state = RecipientState::kDeferred;
  bool counts_attempt = true;     // attempts += 1
  bool suppress_address = false;  // add the address to the suppression list
  int64_t next_attempt_at_ms = 0;  // meaningful for kQueued / kDeferred
};

// `random_unit` in [0, 1) draws the jitter (the caller's RNG keeps this pure).
PolicyDecision decide(const AttemptFacts& facts, const RetrySchedule& schedule,
                      double random_unit);

// The wait before attempt number `attempts + 1` after `attempts` (>= 1) failed ones:
// min(max_delay, first_delay * factor^(attempts-1)) minus up to `jitter` of it.
Seconds backoff_delay(const RetrySchedule& schedule, unsigned attempts, double random_unit);

// True for enhanced codes that say the mailbox does not exist (so never try it again).
bool means_bad_mailbox(const smtp::EnhancedCode& code);

}  // namespace ringmail::storage

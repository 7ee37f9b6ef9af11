#include "storage/delivery_policy.h"

#include <gtest/gtest.h>

namespace ringmail::storage {
namespace {

smtp::Reply reply(int code, uint8_t k = 0, uint16_t s = 0, uint16_t d = 0) {
  smtp::Reply r;
  r.code = code;
  r.enhanced = {k, s, d};
  r.text = "text";
  return r;
}

AttemptFacts facts(smtp::RecipientStatus status, smtp::Reply r, unsigned before = 0) {
  AttemptFacts f;
  f.status = status;
  f.reply = r;
  f.attempts_before = before;
  f.now_ms = 1'000'000;
  f.first_due_at_ms = 1'000'000;
  return f;
}

RetrySchedule no_jitter() {
  RetrySchedule s;
  s.jitter = 0;
  return s;
}

using S = smtp::RecipientStatus;

// The table of storage/README.md, row by row.
TEST(storage_policy, Table) {
  struct Row {
    S status;
    smtp::Reply reply;
    RecipientState state;
    bool suppress;
    bool about_recipient = true;  // the reply answered the recipient's own RCPT
  };
  const Row rows[] = {
      {S::kDelivered, reply(250, 2, 0, 0), RecipientState::kDelivered, false},
      {S::kDeferred, reply(450, 4, 2, 0), RecipientState::kDeferred, false},
      {S::kDeferred, reply(452, 4, 2, 2), RecipientState::kDeferred, false},   // mailbox full
      {S::kDeferred, reply(421, 4, 7, 0), RecipientState::kDeferred, false},
      {S::kDeferred, reply(0, 4, 4, 1), RecipientState::kDeferred, false},     // refused
      {S::kDeferred, reply(0, 4, 4, 2), RecipientState::kDeferred, false},     // lost
      {S::kDeferred, reply(0, 4, 4, 7), RecipientState::kDeferred, false},     // timeout
      {S::kDeferred, reply(0, 4, 5, 0), RecipientState::kDeferred, false},     // protocol
      {S::kDeferred, reply(450), RecipientState::kDeferred, false},            // no enhanced
      {S::kBounced, reply(550, 5, 1, 1), RecipientState::kBounced, true},      // bad mailbox
      {S::kBounced, reply(550, 5, 1, 10), RecipientState::kBounced, true},     // null MX
      {S::kBounced, reply(550, 5, 7, 1), RecipientState::kBounced, false},     // policy
      {S::kBounced, reply(554), RecipientState::kBounced, false},              // no enhanced
      {S::kBounced, reply(552, 5, 2, 2), RecipientState::kDeferred, false},    // 5.2.2 full
      {S::kBounced, reply(550, 5, 1, 2), RecipientState::kBounced, false},     // bad system
      // A 5.1.1 to MAIL or to the end of data says nothing of this recipient's mailbox.
      {S::kBounced, reply(553, 5, 1, 1), RecipientState::kBounced, false, false},
      // The session refused (554 greeting, 535 to AUTH) or 552 to RCPT: the engine defers,
      // and a 5xx code does not overrule it.
      {S::kDeferred, reply(554, 5, 3, 2), RecipientState::kDeferred, false, false},
      {S::kDeferred, reply(535, 5, 7, 8), RecipientState::kDeferred, false, false},
      {S::kDeferred, reply(552, 5, 5, 3), RecipientState::kDeferred, false},
  };
  for (const Row& row : rows) {
    AttemptFacts f = facts(row.status, row.reply);
    f.about_recipient = row.about_recipient;
    PolicyDecision d = decide(f, no_jitter(), 0.5);
    EXPECT_EQ(d.state, row.state) << row.reply.to_string();
    EXPECT_EQ(d.suppress_address, row.suppress) << row.reply.to_string();
    EXPECT_TRUE(d.counts_attempt);
  }
}

TEST(storage_policy, NotAttemptedAtADrainGoesBackToQueuedWithoutCountingAnAttempt) {
  AttemptFacts f = facts(S::kDeferred, reply(0, 4, 3, 2), 3);
  f.not_attempted = true;
  PolicyDecision d = decide(f, no_jitter(), 0.5);
  EXPECT_EQ(d.state, RecipientState::kQueued);
  EXPECT_FALSE(d.counts_attempt);
  EXPECT_EQ(d.next_attempt_at_ms, f.now_ms);
}

// Parked by the engine because its destination had a backlog: not an attempt, and not
// due before the time the engine asked for, however old the recipient is.
TEST(storage_policy, ParkedGoesBackToQueuedForTheTimeTheEngineAskedWithoutAnAttempt) {
  AttemptFacts f = facts(S::kDeferred, reply(0, 4, 4, 5), 2);
  f.not_attempted = true;
  f.retry_after_ms = 5'000;
  f.first_due_at_ms = 0;  // past any maximum age: still not expired by a parking
  PolicyDecision d = decide(f, no_jitter(), 0.5);
  EXPECT_EQ(d.state, RecipientState::kQueued);
  EXPECT_FALSE(d.counts_attempt);
  EXPECT_FALSE(d.suppress_address);
  EXPECT_EQ(d.next_attempt_at_ms, f.now_ms + 5'000);
}

// The engine gives up a transaction unsent when its destination is down: that waits for
// the backoff like any connection failure, or a dead host would be retried in a loop.
TEST(storage_policy, NotAttemptedBecauseTheDestinationIsDownIsADeferral) {
  AttemptFacts f = facts(S::kDeferred, reply(0, 4, 4, 1), 0);
  f.not_attempted = true;
  PolicyDecision d = decide(f, no_jitter(), 0.0);
  EXPECT_EQ(d.state, RecipientState::kDeferred);
  EXPECT_TRUE(d.counts_attempt);
  EXPECT_EQ(d.next_attempt_at_ms, f.now_ms + 60'000);
}

TEST(storage_policy, DeferralSchedulesTheNextAttemptByBackoff) {
  AttemptFacts f = facts(S::kDeferred, reply(450, 4, 2, 0), 2);  // third attempt failed
  PolicyDecision d = decide(f, no_jitter(), 0.0);
  EXPECT_EQ(d.next_attempt_at_ms, f.now_ms + 240'000);  // 60 s * 2^2
}

TEST(storage_policy, BackoffGrowsByTheFactorUpToTheMaximum) {
  RetrySchedule s = no_jitter();
  EXPECT_DOUBLE_EQ(backoff_delay(s, 1, 0).count(), 60);
  EXPECT_DOUBLE_EQ(backoff_delay(s, 2, 0).count(), 120);
  EXPECT_DOUBLE_EQ(backoff_delay(s, 6, 0).count(), 1920);
  EXPECT_DOUBLE_EQ(backoff_delay(s, 7, 0).count(), 3600);    // capped
  EXPECT_DOUBLE_EQ(backoff_delay(s, 500, 0).count(), 3600);  // no overflow
  s.first_delay = Seconds(0);
  EXPECT_DOUBLE_EQ(backoff_delay(s, 3, 0).count(), 0);
}

TEST(storage_policy, JitterTakesOffUpToItsFraction) {
  RetrySchedule s;
  s.jitter = 0.25;
  EXPECT_DOUBLE_EQ(backoff_delay(s, 1, 0.0).count(), 60);
  EXPECT_DOUBLE_EQ(backoff_delay(s, 1, 1.0).count(), 45);
  EXPECT_DOUBLE_EQ(backoff_delay(s, 1, 0.5).count(), 52.5);
  for (double u = 0; u < 1; u += 0.01) {
    double v = backoff_delay(s, 10, u).count();
    EXPECT_LE(v, 3600);
    EXPECT_GE(v, 2700);
  }
}

TEST(storage_policy, DeferredPastTheMaximumAgeExpires) {
  RetrySchedule s = no_jitter();
  s.max_age = Seconds(3600);
  AttemptFacts f = facts(S::kDeferred, reply(451, 4, 3, 0), 5);
  f.now_ms = f.first_due_at_ms + 3'599'999;
  EXPECT_EQ(decide(f, s, 0).state, RecipientState::kDeferred);
  f.now_ms = f.first_due_at_ms + 3'600'000;
  EXPECT_EQ(decide(f, s, 0).state, RecipientState::kExpired);
  // A late success still counts as delivered, and a bounce as bounced.
  f.status = S::kDelivered;
  f.reply = reply(250);
  EXPECT_EQ(decide(f, s, 0).state, RecipientState::kDelivered);
}

}  // namespace
}  // namespace ringmail::storage

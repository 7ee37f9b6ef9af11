// Random server input, in random splits with random partial sends: the session must not
// crash, must keep its memory bounded, and must give every transaction back exactly once.
#include <gtest/gtest.h>

#include <array>
#include <random>
#include <set>
#include <string>

#include "smtp/client_session.h"
#include "smtp/message_body.h"

namespace ringmail::smtp {
namespace {

// Mostly plausible replies, so the fuzzer gets deep into transactions, with junk mixed in.
std::string random_input(std::mt19937& rng) {
  static const char* kPieces[] = {
      "220 mx ESMTP\r\n",
      "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
      "250 ok\r\n",
      "250 2.1.5 ok\r\n",
      "354 go\r\n",
      "450 4.2.0 later\r\n",
      "550 5.1.1 no\r\n",
      "421 4.7.0 bye\r\n",
      "503 5.5.1 sequence\r\n",
      "221 bye\r\n",
      "250-",
      "250 ",
      "\r\n",
      "\n",
      "\r",
      "2.0.0 ",
      "599",
      "1",
      "x",
      "\xff",
      "000 x\r\n",
  };
  std::string out;
  size_t pieces = rng() % 40;
  for (size_t i = 0; i < pieces; ++i) {
    if (rng() % 8 == 0) {
      size_t n = rng() % 16;
      for (size_t k = 0; k < n; ++k) out += char(rng());
    } else {
      out += kPieces[rng() % std::size(kPieces)];
    }
  }
  return out;
}

TEST(SessionFuzzTest, RandomInputNeverBreaksInvariants) {
  std::mt19937 rng(20240601);
  EncodedBody body = std::make_shared<const std::string>(encode_data_body("hello\n.\n"));
  for (int round = 0; round < 4000; ++round) {
    SessionOptions options;
    options.allow_pipelining = rng() % 4 != 0;
    options.reply_limits.max_line_bytes = 64 + rng() % 64;
    ClientSession s(options);
    std::set<uint64_t> added, returned;
    uint64_t next_id = 1;
    const std::string input = random_input(rng);
    size_t at = 0;
    while (at < input.size()) {
      while (s.can_accept_transaction() && rng() % 3 != 0) {
        Transaction t;
        t.id = next_id++;
        t.sender = "s@x";
        t.recipients.assign(1 + rng() % 3, "r@x");
        t.body = body;
        added.insert(t.id);
        s.add_transaction(std::move(t));
      }
      ASSERT_LE(s.queued_transactions(), 2u);
      if (rng() % 20 == 0) s.quit();
      // Send a random part of what is pending.
      std::array<std::string_view, 16> segments;
      size_t n = s.pending_output(segments);
      size_t total = 0;
      for (size_t i = 0; i < n; ++i) total += segments[i].size();
      ASSERT_EQ(total, s.pending_output_bytes());
      ASSERT_LT(total, 4096u);
      if (total > 0) s.mark_sent(rng() % 2 ? total : rng() % (total + 1));
      size_t chunk = 1 + rng() % 24;
      s.receive(std::string_view(input).substr(at, chunk));
      at += chunk;
      for (TransactionOutcome& o : s.finished()) {
        ASSERT_TRUE(returned.insert(o.transaction.id).second) << "returned twice";
        ASSERT_EQ(o.recipients.size(), o.transaction.recipients.size());
        for (const RecipientOutcome& r : o.recipients) {
          // Every outcome is final: a delivery needs a 2xx, failures carry a reason.
          if (r.status == RecipientStatus::kDelivered) {
            ASSERT_TRUE(r.reply.positive_completion());
          }
          if (r.status == RecipientStatus::kBounced) {
            ASSERT_TRUE(r.reply.code == 0 || r.reply.permanent_failure());
          }
          if (r.reply.code == 0) {
            ASSERT_TRUE(r.reply.enhanced.present());
          }
        }
      }
      s.finished().clear();
    }
    s.abort({4, 4, 2}, "end of input");
    EXPECT_EQ(s.phase(), SessionPhase::kClosed);
    EXPECT_EQ(s.queued_transactions(), 0u);
    EXPECT_EQ(s.pending_output_bytes(), 0u);
    for (TransactionOutcome& o : s.finished())
      ASSERT_TRUE(returned.insert(o.transaction.id).second);
    ASSERT_EQ(added, returned);
  }
}

}  // namespace
}  // namespace ringmail::smtp

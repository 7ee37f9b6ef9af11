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
constexpr const char* kPieces[] = {
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

// With STARTTLS and AUTH in play: their offers and replies too.
constexpr const char* kSecurityPieces[] = {
    "220 mx ESMTP\r\n",
    "250-mx\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n",
    "250-mx\r\n250-PIPELINING\r\n250 AUTH LOGIN\r\n",
    "250-mx\r\n250 STARTTLS\r\n",
    "220 2.0.0 go ahead\r\n",
    "454 4.7.0 no TLS\r\n",
    "334 VXNlcm5hbWU6\r\n",
    "235 2.7.0 ok\r\n",
    "535 5.7.8 bad credentials\r\n",
    "250 ok\r\n",
    "354 go\r\n",
    "550 5.1.1 no\r\n",
    "421 4.7.0 bye\r\n",
    "221 bye\r\n",
    "\r\n",
    "x",
};

template <size_t N>
std::string random_input(std::mt19937& rng, const char* const (&choices)[N]) {
  std::string out;
  size_t pieces = rng() % 40;
  for (size_t i = 0; i < pieces; ++i) {
    if (rng() % 8 == 0) {
      size_t n = rng() % 16;
      for (size_t k = 0; k < n; ++k) out += char(rng());
    } else {
      out += choices[rng() % N];
    }
  }
  return out;
}

// `security`: random STARTTLS/AUTH options and the transport's TLS calls at random
// moments; no outcome may carry the password (the server never echoes it here; echoes
// are the transcripts' business).
void fuzz(uint32_t seed, bool security) {
  std::mt19937 rng(seed);
  EncodedBody body = std::make_shared<const std::string>(encode_data_body("hello\n.\n"));
  for (int round = 0; round < 4000; ++round) {
    SessionOptions options;
    options.allow_pipelining = rng() % 4 != 0;
    options.reply_limits.max_line_bytes = 64 + rng() % 64;
    if (security) {
      options.starttls = StartTlsPolicy(rng() % 3);
      options.implicit_tls = rng() % 4 == 0;
      if (rng() % 2) options.auth = AuthCredentials{"alice", "s3cret-Pw", rng() % 2 == 0};
    }
    ClientSession s(options);
    std::set<uint64_t> added, returned;
    uint64_t next_id = 1;
    const std::string input =
        security ? random_input(rng, kSecurityPieces) : random_input(rng, kPieces);
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
      if (security && s.wants_tls_handshake()) {
        // Nothing is queued after STARTTLS; the handshake starts once all of it is out.
        std::array<std::string_view, 16> unsent;
        std::string rest;
        for (size_t i = 0, n = s.pending_output(unsent); i < n; ++i) rest.append(unsent[i]);
        const std::string_view starttls = "STARTTLS\r\n";
        ASSERT_TRUE(rest.ends_with(starttls) || starttls.ends_with(rest)) << rest;
        ASSERT_EQ(s.awaiting(), Awaiting::kCommand);
        if (s.pending_output_bytes() == 0) {
          if (rng() % 4 == 0) {
            s.tls_failed("handshake failure");
          } else if (rng() % 2) {
            s.tls_established();
          }
        }
      }
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
          ASSERT_EQ(r.reply.text.find("s3cret-Pw"), std::string::npos) << r.reply.text;
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

TEST(SessionFuzzTest, RandomInputNeverBreaksInvariants) { fuzz(20240601, /*security=*/false); }

TEST(SessionFuzzTest, RandomInputWithTlsAndAuth) { fuzz(20240602, /*security=*/true); }

}  // namespace
}  // namespace ringmail::smtp

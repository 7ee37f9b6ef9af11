// The client side of one SMTP connection as a pure state machine (no sockets, clocks,
// logging or TLS): the transport feeds it the server's bytes and sends what it asks;
// the session produces per-recipient outcomes. Pipelines (RFC 2920) when advertised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "smtp/capabilities.h"
#include "smtp/reply_parser.h"
#include "smtp/transaction.h"

namespace ringmail::smtp {

struct SessionOptions {
  std::string helo_name = "localhost";  // the name sent in EHLO/HELO
  bool allow_pipelining = true;  // pipeline when the server advertises PIPELINING
  ReplyLimits reply_limits;
};

// What the session is waiting for from the server; the engine picks the matching timeout
// (RFC 5321 §4.5.3.2) from it.
enum class Awaiting : uint8_t {
  kNothing,   // idle (or closed): the engine applies its idle timeout
  kGreeting,  // 220 banner
  kCommand,   // reply to EHLO/HELO/MAIL/RCPT/RSET/QUIT
  kDataStart, // reply to DATA (354)
  kDataEnd,   // reply to the end-of-data dot
};

// Lifecycle of the whole connection.
enum class SessionPhase : uint8_t {
  kConnecting,  // waiting for the greeting
  kGreeting,    // EHLO/HELO exchange in progress
  kReady,       // can run transactions
  kQuitting,    // QUIT queued or sent; nothing more will be accepted
  kClosed,      // finished: the engine should close the connection once output is sent
};

class ClientSession {
 public:
  explicit ClientSession(SessionOptions options);

  // ---- Input from the transport -------------------------------------------------------

  // Bytes the server sent, in any chunking (one byte at a time gives the same result as
  // one block). Replies are matched, in order, to the commands sent.
  //
  // A reply that is malformed or oversized, a reply with a code not allowed for its
  // command (e.g. 354 to RCPT), or bytes that arrive when no reply is expected is a
  // protocol error: every unfinished recipient gets a deferred outcome (4.5.0, text says
  // what was wrong), phase becomes kClosed, and further input is ignored.
  //
  // A 421 to any command (or as the greeting) ends the session the same way after the
  // 421 is applied to the command it answered: the server is closing the connection.
  void receive(std::string_view bytes);

  // The connection failed or the peer closed it, or a timeout expired (`enhanced` 4.4.2
  // or 4.4.7; `reason` is free text such as "timeout after RCPT"). Every unfinished
  // recipient gets a deferred outcome with that reason; transactions of which nothing
  // was sent are marked not_attempted. Phase becomes kClosed. Idempotent.
  void abort(EnhancedCode enhanced, std::string_view reason);

  // ---- Work ---------------------------------------------------------------------------

  // True when add_transaction() may be called now: the session is kConnecting, kGreeting
  // or kReady and holds fewer than max_queued_transactions() unfinished transactions.
  bool can_accept_transaction() const;
  // How many unfinished transactions the session holds at most: 2 with pipelining (one
  // being sent, the next one's envelope pipelined after the end of data), 1 otherwise,
  // and 1 before the EHLO reply tells whether the server pipelines.
  size_t max_queued_transactions() const;
  // Queues a transaction. Its envelope is sent as soon as the protocol allows: with
  // PIPELINING, MAIL + every RCPT + DATA in one write, immediately after the previous
  // transaction's end-of-data dot; lock-step (one command, one reply) otherwise.
  // A transaction whose every RCPT was refused never sends its body: if the server
  // still answers DATA with 354, the session sends only the terminating dot and ignores
  // that reply. After an aborted transaction (MAIL refused, no recipient accepted, DATA
  // refused) RSET precedes the next MAIL. SIZE= is added to MAIL when advertised.
  void add_transaction(Transaction transaction);
  // Number of unfinished transactions held.
  size_t queued_transactions() const;

  // Sends QUIT once every queued transaction has finished (immediately if none), and
  // closes after its reply. No transaction is accepted afterwards.
  void quit();

  // ---- Output for the transport -------------------------------------------------------

  // The bytes to send next, as up to out.size() segments in order (the body is not
  // copied: segments point into the transaction's shared body). Returns the number of
  // segments filled; 0 when there is nothing to send. Views stay valid until the next
  // call of mark_sent(), receive(), abort(), add_transaction() or quit().
  size_t pending_output(std::span<std::string_view> out) const;
  size_t pending_output_bytes() const;
  // `bytes` of the pending output reached the kernel; they are dropped from the front.
  void mark_sent(size_t bytes);

  // Outcomes of finished transactions, in order. The caller moves them out (e.g. with
  // std::exchange) and clears the vector.
  std::vector<TransactionOutcome>& finished();

  // ---- State --------------------------------------------------------------------------

  SessionPhase phase() const;
  Awaiting awaiting() const;
  // True when nothing is in progress: kReady with no transaction queued (the connection
  // is idle and may be reused or closed).
  bool idle() const;
  const Capabilities& capabilities() const;
  // Transactions completed (end-of-data reply received, success or failure) on this session.
  uint64_t transactions_completed() const;

 private:
  // Implementation details live in client_session.cc; see the comments there.
  struct Expected;  // one reply awaited: which command, for which transaction/recipient
  struct Pending;   // one transaction and its progress
  struct OutSegment {
    EncodedBody body;   // set for a body segment; null for an owned command segment
    std::string owned;  // commands (coalesced)
    size_t offset = 0;  // bytes already sent from this segment
  };

  SessionOptions options_;
  // ... private members are the implementer's choice.
};

}  // namespace ringmail::smtp

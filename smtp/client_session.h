// The client side of one SMTP connection as a pure state machine (no sockets, clocks,
// logging or TLS): the transport feeds it the server's bytes and sends what it asks;
// the session produces per-recipient outcomes. Pipelines (RFC 2920) when advertised;
// asks for STARTTLS (RFC 3207) and authenticates (RFC 4954) when configured to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "smtp/capabilities.h"
#include "smtp/reply_parser.h"
#include "smtp/transaction.h"

namespace ringmail::smtp {

// Whether to upgrade a plaintext connection with STARTTLS after EHLO.
enum class StartTlsPolicy : uint8_t {
  kNever,      // plaintext (or implicit TLS, which the transport does before the greeting)
  kIfOffered,  // STARTTLS when advertised; plaintext when not, or when STARTTLS is refused
  kRequired,   // STARTTLS or nothing: its absence or refusal defers every transaction (4.7.0)
};

// AUTH (RFC 4954) towards a relay. Mechanisms in order of preference: PLAIN (one command
// with an initial response), then LOGIN.
struct AuthCredentials {
  std::string username;
  std::string password;
  // Credentials go only over TLS (STARTTLS done, or implicit TLS) unless this is set.
  bool allow_plaintext = false;
};

struct SessionOptions {
  std::string helo_name = "localhost";  // the name sent in EHLO/HELO
  bool allow_pipelining = true;  // pipeline when the server advertises PIPELINING
  ReplyLimits reply_limits;
  StartTlsPolicy starttls = StartTlsPolicy::kNever;
  // The transport completed a TLS handshake before the greeting (RFC 8314, port 465): the
  // session is secure() from the start and never asks for STARTTLS.
  bool implicit_tls = false;
  // Set: authenticate after the final EHLO, before any transaction.
  std::optional<AuthCredentials> auth;
};

// What the session is waiting for from the server; the engine picks the matching timeout
// (RFC 5321 §4.5.3.2) from it.
enum class Awaiting : uint8_t {
  kNothing,   // idle (or closed): the engine applies its idle timeout
  kGreeting,  // 220 banner
  kCommand,   // reply to EHLO/HELO/STARTTLS/AUTH/MAIL/RCPT/RSET/QUIT, or the TLS handshake
  kDataStart, // reply to DATA (354)
  kDataEnd,   // reply to the end-of-data dot
};

// Lifecycle of the whole connection.
enum class SessionPhase : uint8_t {
  kConnecting,    // waiting for the greeting
  kGreeting,      // EHLO/HELO, STARTTLS and AUTH exchanges in progress
  kTlsHandshake,  // STARTTLS accepted: the transport runs the TLS handshake (see below)
  kReady,         // can run transactions
  kQuitting,      // QUIT queued or sent; nothing more will be accepted
  kClosed,        // finished: the engine should close the connection once output is sent
};

class ClientSession {
 public:
  explicit ClientSession(SessionOptions options);
  // Overwrites the password and any credentials still in the output buffer.
  ~ClientSession();
  ClientSession(ClientSession&&) = default;
  ClientSession& operator=(ClientSession&&) = default;

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
  //
  // The bytes after the 220 that accepts STARTTLS, in the same call, and every byte given
  // while wants_tls_handshake() are discarded unread: the server can have sent nothing
  // legitimate before the handshake, so anything there was injected by a third party
  // (CVE-2011-0411). Once the handshake is done the session reads only the decrypted
  // stream, from a fresh reply parser.
  void receive(std::string_view bytes);

  // The connection failed or the peer closed it, or a timeout expired (`enhanced` 4.4.2
  // or 4.4.7; `reason` is free text such as "timeout after RCPT"). Every unfinished
  // recipient gets a deferred outcome with that reason; transactions of which nothing
  // was sent are marked not_attempted. Phase becomes kClosed. Idempotent.
  void abort(EnhancedCode enhanced, std::string_view reason);

  // ---- TLS, driven by the transport ----------------------------------------------------

  // True from the 220 reply to STARTTLS until tls_established() or tls_failed(): the
  // transport must now run the TLS client handshake on the connection, starting once
  // pending_output_bytes() is 0 and no send is in flight (the 220 may be read before the
  // completion of the send that carried STARTTLS is; nothing is queued after STARTTLS,
  // so whatever is still pending ends with it). Meanwhile the phase is kTlsHandshake,
  // awaiting() is kCommand (the peer owes us handshake bytes; the command timeout bounds
  // a stalled handshake), and transactions may still be queued (they wait).
  bool wants_tls_handshake() const;
  // The handshake succeeded: from now on receive() takes the decrypted stream and
  // pending_output() is to be encrypted. The capabilities are forgotten and EHLO is sent
  // again (or QUIT at once if quit() was called and nothing is queued). Ignored unless
  // wants_tls_handshake().
  void tls_established();
  // The handshake failed (or, with implicit TLS, failed before the greeting): every
  // unfinished recipient is deferred with 4.7.0 "TLS handshake failed: <reason>",
  // transactions none of whose bytes were sent are not_attempted, nothing more is sent
  // (no QUIT: the stream is in no state for one) and the phase becomes kClosed. Ignored
  // once closed.
  void tls_failed(std::string_view reason);

  // ---- Work ---------------------------------------------------------------------------

  // True when add_transaction() may be called now: the session is kConnecting, kGreeting,
  // kTlsHandshake or kReady and holds fewer than max_queued_transactions() unfinished
  // transactions.
  bool can_accept_transaction() const;
  // How many unfinished transactions the session holds at most: 2 with pipelining (one
  // being sent, the next one's envelope pipelined after the end of data), 1 otherwise,
  // and 1 until the session is ready (the last EHLO reply, after STARTTLS and AUTH, tells
  // whether the server pipelines). Transactions queued before then wait; none is sent
  // before STARTTLS and AUTH have completed.
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
  // closes after its reply. With PIPELINING, QUIT goes as soon as every queued
  // transaction's dot is queued, in the same write as the last dot (RFC 2920), and the
  // replies to the dots still come before the phase is kClosed. No transaction is
  // accepted afterwards.
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
  // The server accepted the session: greeting, EHLO and any STARTTLS and AUTH went through
  // (it may have gone straight on to QUIT, skipping kReady, when quit() came early), or a
  // positive greeting was answered with QUIT because there was nothing to send. Stays
  // true to the end: what the engine counts as the host being up.
  bool accepted() const { return accepted_; }
  // The connection is encrypted: implicit TLS, or tls_established() was called.
  bool secure() const;
  // The server accepted our AUTH (235).
  bool authenticated() const;
  // Authentication cannot succeed with these credentials against this server: it refused
  // AUTH with a 5xx (535 bad credentials, 504 mechanism refused...) or advertised no
  // mechanism we speak. Every transaction was deferred with that reason (not_attempted,
  // so it can be retried once the configuration is fixed) and QUIT was queued; the
  // transport should stop sending to this destination rather than retry at once.
  bool auth_failed() const;

 private:
  // Behaviour notes, where the contract above leaves a choice (Postfix smtp(8) decided):
  // - Output lifetime is stronger than promised above: bytes returned by pending_output()
  //   stay at the same address until mark_sent() covers them, whatever else is called
  //   meanwhile (so a send may be in flight across receive()/add_transaction()). After
  //   abort(), a protocol error or a 421 the rest of the output is withdrawn (pending
  //   bytes 0, mark_sent() ignored) but kept alive until the session is destroyed.
  //   abort() on a closed session withdraws what is left (the QUIT after a refused
  //   greeting); outcomes are never produced twice.
  // - Segments: a command group is one owned segment (commands are appended to the last
  //   owned segment while it has room, never moving bytes already there); a body is its
  //   own segment pointing into the shared body. With pipelining, one message costs
  //   [body] [".\r\n" + ("RSET\r\n") + next MAIL/RCPT.../DATA]: two segments.
  // - finished() fills when a transaction's last expected reply arrives: the reply to
  //   the dot, or to MAIL/RCPT/DATA when it was refused there (with PIPELINING the reply
  //   to DATA, which was already sent), or the ignored reply to a dot sent with no
  //   accepted recipient; or at once when the session fails (abort, protocol error,
  //   421, refused greeting/HELO/RSET), with every undecided recipient deferred.
  // - transactions_completed() counts transactions finished by their own server replies
  //   (the dot's reply, or a refusal of MAIL/every RCPT/DATA), not those failed wholesale.
  // - not_attempted: no reply was received for the transaction and none of its MAIL
  //   command's bytes had been marked sent (an RSET before it does not count).
  // - EHLO refused with any 4xx/5xx but 421 falls back to HELO. A refused greeting or
  //   HELO defers every queued transaction with that reply and queues QUIT (not after a
  //   421). A refused RSET ends the session without QUIT (the stream state is unclear).
  // - After a 421 every other unfinished recipient is deferred with that 421 reply.
  // - quit() before the greeting: QUIT follows the 220 directly, without EHLO. Without
  //   PIPELINING QUIT goes once every transaction has finished (the dot's reply is in);
  //   with it, right after the last dot. Meanwhile the phase is kQuitting.
  // - The queue limit is soft: add_transaction() beyond max_queued_transactions() queues
  //   (sent in turn). In kQuitting/kClosed a transaction comes straight back in
  //   finished(), deferred 4.4.2 and not_attempted. An address containing CR or LF
  //   bounces the whole transaction locally (code 0, 5.1.3): it would inject commands.
  //   A transaction without recipients comes straight back, not_attempted.
  // - BODY=8BITMIME is not sent (it would need a scan of every body per transaction).
  // - Order after a successful EHLO (or HELO): STARTTLS if the policy asks and the session
  //   is not secure yet, then AUTH if credentials are set, then kReady. max_queued and
  //   PIPELINING are decided only then, from the last EHLO reply (the one after TLS).
  //   With quit() called and nothing queued, STARTTLS and AUTH are skipped: QUIT follows.
  // - STARTTLS is sent alone and its reply awaited (RFC 3207 §4: nothing may follow it in
  //   a pipeline). A 4xx/5xx to it under kIfOffered continues in plaintext on the same
  //   connection, as the EHLO state is unchanged (no RSET, no second EHLO); under
  //   kRequired it fails the session like a missing STARTTLS: every transaction deferred
  //   (code 0, 4.7.0, the text quoting the server's reply), not_attempted, QUIT queued.
  // - tls_failed() sends no QUIT (a plaintext QUIT mid-handshake is garbage to the peer).
  //   Retrying in plaintext (Postfix does for opportunistic TLS) is the caller's choice:
  //   the transactions come back not_attempted.
  // - AUTH refusals: 5xx → auth_failed(); 4xx → temporary. Both defer every transaction
  //   with the server's reply (deferred, not bounced: the recipients are not at fault),
  //   not_attempted, and queue QUIT; a 421 behaves as for any command. A 334 where none
  //   is due (to AUTH PLAIN with its initial response, or to the password) is a protocol
  //   error. A 235 at any step ends the exchange successfully.
  //   Refusing to authenticate in plaintext and "no mechanism we speak" are local
  //   failures (code 0, 4.7.0); the latter sets auth_failed().
  // - Credentials: every reply to an AUTH step (and a parse error in one) is scrubbed of
  //   the password and of the base64 forms we sent (a server may echo them in its 535),
  //   so no outcome carries them; the password is then wiped from the options. Output
  //   segments that held credentials are zeroed once sent, and at destruction.

  // The reply each queued command waits for; the transaction it concerns is always the
  // oldest unfinished one, since replies come in order and transactions finish in order.
  enum class Command : uint8_t {
    kGreeting,
    kEhlo,
    kHelo,
    kMail,
    kRcpt,
    kData,
    kDot,
    kDotWithoutRecipients,  // the dot closing a DATA opened with no accepted recipient
    kRset,
    kQuit,
    kStartTls,
    kAuth,          // the last AUTH step: AUTH PLAIN with its response, or the password
    kAuthLogin,     // AUTH LOGIN: a 334 asks for the username
    kAuthUsername,  // the username: a 334 asks for the password
  };
  // How far a transaction's sending has gone; with pipelining the next transaction's
  // envelope may follow once this one is kDone.
  enum class SendStage : uint8_t { kNotSent, kEnvelopeSent, kDone };

  struct Pending {
    // recipients[i].reply.code is the progress marker until the end: 0 no RCPT reply
    // yet, 2xx accepted (awaiting DATA/dot), 4xx/5xx decided.
    TransactionOutcome outcome;
    uint64_t mail_offset = UINT64_MAX;  // output stream offset of its MAIL; MAX: not queued
    uint32_t rcpt_replies = 0;
    uint32_t accepted = 0;
    bool mail_failed = false;
    bool got_reply = false;
    SendStage send = SendStage::kNotSent;
  };

  struct OutSegment {
    EncodedBody body;   // set for a body segment; null for an owned command segment
    std::string owned;  // commands (coalesced); capacity kept when the slot is reused
    size_t offset = 0;  // bytes already sent from this segment
    bool secret = false;  // holds credentials: zeroed when sent
  };

  // A FIFO over a power-of-two ring whose slots keep their buffers when reused; a deque
  // would allocate and free blocks as a steady stream walks through it.
  template <typename T>
  class Ring {
   public:
    bool empty() const { return size_ == 0; }
    size_t size() const { return size_; }
    T& operator[](size_t i) { return slots_[(head_ + i) & (slots_.size() - 1)]; }
    const T& operator[](size_t i) const { return slots_[(head_ + i) & (slots_.size() - 1)]; }
    T& front() { return (*this)[0]; }
    const T& front() const { return (*this)[0]; }
    T& back() { return (*this)[size_ - 1]; }
    // Appends the next slot as its previous use left it; the caller resets what matters.
    T& push_back() {
      if (size_ == slots_.size()) grow();
      ++size_;
      return back();
    }
    void pop_front() {
      head_ = (head_ + 1) & (slots_.size() - 1);
      --size_;
    }
    void clear() { head_ = size_ = 0; }

   private:
    void grow() {
      std::vector<T> bigger(slots_.empty() ? 4 : slots_.size() * 2);
      for (size_t i = 0; i < size_; ++i) bigger[i] = std::move((*this)[i]);
      slots_ = std::move(bigger);
      head_ = 0;
    }
    std::vector<T> slots_;
    size_t head_ = 0;
    size_t size_ = 0;
  };

  // Input side (client_session.cc).
  void handle_reply(Reply& reply);
  void dispatch(Command command, Reply& reply);
  void on_greeting(const Reply& reply);
  void on_ehlo(const Reply& reply);
  void on_helo(const Reply& reply);
  void on_mail(const Reply& reply);
  void on_rcpt(const Reply& reply);
  void on_data(const Reply& reply);
  void on_dot(Reply& reply);
  void after_ehlo();
  void on_starttls(const Reply& reply);
  void start_auth();
  void on_auth(Command command, const Reply& reply);
  void fail_locally(std::string text, bool send_quit);
  static bool is_auth(Command command);
  void redact_credentials(std::string& text) const;
  void handshake_done();
  void pump();
  bool all_sent() const;  // every queued transaction has sent its dot (or is decided)
  void finish_front(bool by_server);
  void fail_session(const Reply& reply, bool send_quit);
  void protocol_error(std::string what);
  void unexpected_reply(Command command, const Reply& reply);

  // Output side (client_session_output.cc).
  std::string& command_buffer(size_t bytes);
  void queue_command(std::initializer_list<std::string_view> parts, Command expect);
  void queue_mail(Pending& pending);
  void queue_rcpt(Pending& pending, size_t index);
  void queue_envelope(Pending& pending);
  void queue_body_and_dot(Pending& pending);
  void queue_quit();
  void queue_secret(std::string command, Command expect);
  void withdraw_output() { output_withdrawn_ = true; }

  SessionOptions options_;
  ReplyParser parser_;
  Capabilities capabilities_;
  SessionPhase phase_ = SessionPhase::kConnecting;
  bool pipelining_ = false;  // advertised and allowed
  bool need_rset_ = false;   // the last transaction aborted; RSET before next MAIL
  bool quit_requested_ = false;
  bool quit_queued_ = false;
  bool output_withdrawn_ = false;  // the session failed: nothing more is offered
  bool secure_ = false;            // implicit TLS, or STARTTLS completed
  bool accepted_ = false;          // accepted()
  bool starttls_refused_ = false;  // a 4xx/5xx to STARTTLS under kIfOffered: plaintext
  bool authenticated_ = false;
  bool auth_failed_ = false;
  Ring<Command> expected_;         // replies awaited, in order
  Ring<Pending> pending_;          // unfinished transactions, in order
  Ring<OutSegment> out_;           // output not yet marked sent
  uint64_t queued_bytes_ = 0;      // every byte ever queued...
  uint64_t sent_bytes_ = 0;        // ...and marked sent: offsets into one output stream
  uint64_t completed_ = 0;
  std::vector<TransactionOutcome> finished_;
};

}  // namespace ringmail::smtp

// The session's protocol logic: replies matched in order against the commands queued,
// the outcome of each recipient decided from them, and the next commands chosen. The
// send side (what may go out now) and the receive side (what each reply means) only
// meet through the FIFO of expected replies and each transaction's SendStage, as in
// Postfix's smtp_loop(); the output buffer itself is in client_session_output.cc.
#include "smtp/client_session.h"

#include <cassert>
#include <utility>

#include "smtp/base64.h"
#include "smtp/secret.h"

namespace ringmail::smtp {
namespace {

constexpr EnhancedCode kConnectionLost{4, 4, 2};
constexpr EnhancedCode kProtocolError{4, 5, 0};
constexpr EnhancedCode kBadAddress{5, 1, 3};
// RFC 3463 X.7.0 "other or undefined security status": TLS or AUTH could not be had.
constexpr EnhancedCode kSecurity{4, 7, 0};

Reply local_reply(EnhancedCode enhanced, std::string text) {
  Reply reply;
  reply.enhanced = enhanced;
  reply.text = std::move(text);
  return reply;
}

RecipientStatus status_of(const Reply& reply) {
  if (reply.positive_completion()) return RecipientStatus::kDelivered;
  if (reply.permanent_failure()) return RecipientStatus::kBounced;
  return RecipientStatus::kDeferred;
}

bool is_refusal(const Reply& reply) {
  return reply.transient_failure() || reply.permanent_failure();
}

// Not yet decided: no RCPT reply, or accepted and waiting for DATA and the dot.
bool undecided(const RecipientOutcome& outcome) {
  return outcome.reply.code == 0 || (outcome.reply.code >= 200 && outcome.reply.code < 300);
}

bool has_line_break(std::string_view address) {
  for (char c : address)
    if (c == '\r' || c == '\n') return true;
  return false;
}

const char* command_name(int command) {
  static constexpr const char* kNames[] = {"greeting", "EHLO",        "HELO",        "MAIL", "RCPT",
                                           "DATA",     "end of data", "end of data", "RSET", "QUIT",
                                           "STARTTLS", "AUTH",        "AUTH",        "AUTH"};
  return kNames[command];
}

bool has_word(std::string_view list, std::string_view word) {
  while (!list.empty()) {
    const size_t space = list.find(' ');
    if (list.substr(0, space) == word) return true;
    list = space == std::string_view::npos ? std::string_view{} : list.substr(space + 1);
  }
  return false;
}

// "<prefix><base64(secret)>\r\n" built in place: no intermediate copy of the credential
// is left behind in freed memory by a reallocation.
std::string secret_line(std::string_view prefix, std::string_view secret) {
  std::string encoded = base64_encode(secret);
  std::string line;
  line.reserve(prefix.size() + encoded.size() + 2);
  line.append(prefix).append(encoded).append("\r\n");
  wipe_secret(encoded);
  return line;
}

// RFC 4616: authorization identity (empty: the same as the user), user, password.
std::string plain_response(const AuthCredentials& auth) {
  std::string response;
  response.reserve(2 + auth.username.size() + auth.password.size());
  response.append(1, '\0').append(auth.username).append(1, '\0').append(auth.password);
  return response;
}

void replace_all(std::string& text, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size()))
    text.replace(at, what.size(), with);
}

}  // namespace

ClientSession::ClientSession(SessionOptions options)
    : options_(std::move(options)), parser_(options_.reply_limits) {
  expected_.push_back() = Command::kGreeting;
  secure_ = options_.implicit_tls;
}

ClientSession::~ClientSession() {
  if (options_.auth) wipe_secret(options_.auth->password);
  for (size_t i = 0; i < out_.size(); ++i)
    if (out_[i].secret) wipe_secret(out_[i].owned);
}

// ---- Input --------------------------------------------------------------------------

void ClientSession::receive(std::string_view bytes) {
  while (!bytes.empty() && phase_ != SessionPhase::kClosed) {
    // After the 220 to STARTTLS: whatever follows is not the server's (see the header).
    if (phase_ == SessionPhase::kTlsHandshake) return;
    if (expected_.empty()) {
      protocol_error("unexpected data from server while no reply was awaited");
      return;
    }
    ReplyParseResult result = parser_.parse(bytes);
    bytes.remove_prefix(result.consumed);
    switch (result.status) {
      case ReplyParseStatus::kNeedMore:
        return;
      case ReplyParseStatus::kError:
        // Nothing is at stake once QUIT is out: whatever the server says, we are done.
        if (expected_.front() == Command::kQuit) {
          expected_.clear();
          phase_ = SessionPhase::kClosed;
        } else {
          if (is_auth(expected_.front())) redact_credentials(result.error);  // quotes the line
          protocol_error(std::move(result.error));
        }
        return;
      case ReplyParseStatus::kReply:
        handle_reply(result.reply);
        break;
    }
  }
}

void ClientSession::handle_reply(Reply& reply) {
  const Command command = expected_.front();
  expected_.pop_front();
  if (is_auth(command)) redact_credentials(reply.text);
  if (reply.code == 421 && command != Command::kQuit) {
    // The server is closing: the 421 answers its command like any 4xx, and then every
    // other unfinished recipient is deferred with it. No QUIT; it would not be read.
    Reply closing = reply;
    switch (command) {
      case Command::kMail:
      case Command::kRcpt:
      case Command::kData:
      case Command::kDot:
      case Command::kDotWithoutRecipients:
        dispatch(command, reply);
        break;
      default:
        break;
    }
    if (phase_ != SessionPhase::kClosed) fail_session(closing, /*send_quit=*/false);
    return;
  }
  dispatch(command, reply);
  if (phase_ != SessionPhase::kClosed) pump();
}

void ClientSession::dispatch(Command command, Reply& reply) {
  switch (command) {
    case Command::kGreeting:
      on_greeting(reply);
      break;
    case Command::kEhlo:
      on_ehlo(reply);
      break;
    case Command::kHelo:
      on_helo(reply);
      break;
    case Command::kMail:
      on_mail(reply);
      break;
    case Command::kRcpt:
      on_rcpt(reply);
      break;
    case Command::kData:
      on_data(reply);
      break;
    case Command::kDot:
      on_dot(reply);
      break;
    case Command::kDotWithoutRecipients:
      // The dot only closed a DATA the server should not have opened; its reply says
      // nothing about recipients, who were all refused already.
      finish_front(/*by_server=*/true);
      break;
    case Command::kRset:
      if (is_refusal(reply)) {
        fail_session(reply, /*send_quit=*/false);
      } else if (!reply.positive_completion()) {
        unexpected_reply(command, reply);
      }
      break;
    case Command::kQuit:
      expected_.clear();
      phase_ = SessionPhase::kClosed;
      break;
    case Command::kStartTls:
      on_starttls(reply);
      break;
    case Command::kAuth:
    case Command::kAuthLogin:
    case Command::kAuthUsername:
      on_auth(command, reply);
      break;
  }
}

void ClientSession::on_greeting(const Reply& reply) {
  if (reply.positive_completion()) {
    if (quit_requested_ && pending_.empty()) {
      accepted_ = true;
      queue_quit();  // nothing to send: no point in EHLO
      return;
    }
    phase_ = SessionPhase::kGreeting;
    queue_command({"EHLO ", options_.helo_name, "\r\n"}, Command::kEhlo);
  } else if (is_refusal(reply)) {
    fail_session(reply, /*send_quit=*/true);
  } else {
    unexpected_reply(Command::kGreeting, reply);
  }
}

void ClientSession::on_ehlo(const Reply& reply) {
  if (reply.positive_completion()) {
    capabilities_ = parse_ehlo_reply(reply);
    after_ehlo();
  } else if (is_refusal(reply)) {
    // Postfix falls back on any refusal but 421 (handled before we get here): servers
    // that do not know EHLO answer 500 or 502, some answer 4xx or 554.
    queue_command({"HELO ", options_.helo_name, "\r\n"}, Command::kHelo);
  } else {
    unexpected_reply(Command::kEhlo, reply);
  }
}

void ClientSession::on_helo(const Reply& reply) {
  if (reply.positive_completion()) {
    capabilities_ = Capabilities{};
    after_ehlo();
  } else if (is_refusal(reply)) {
    fail_session(reply, /*send_quit=*/true);
  } else {
    unexpected_reply(Command::kHelo, reply);
  }
}

void ClientSession::after_ehlo() {
  if (quit_requested_ && pending_.empty()) {
    handshake_done();  // nothing to protect or authenticate: straight to QUIT
    return;
  }
  if (options_.starttls != StartTlsPolicy::kNever && !secure_ && !starttls_refused_) {
    if (capabilities_.starttls) {
      queue_command({"STARTTLS\r\n"}, Command::kStartTls);
      return;
    }
    if (options_.starttls == StartTlsPolicy::kRequired) {
      fail_locally("TLS required but not offered by server", /*send_quit=*/true);
      return;
    }
  }
  if (options_.auth && !authenticated_) {
    start_auth();
    return;
  }
  handshake_done();
}

void ClientSession::on_starttls(const Reply& reply) {
  if (reply.positive_completion()) {
    // The transport takes over the byte stream; receive() drops what is left of it.
    phase_ = SessionPhase::kTlsHandshake;
    parser_.reset();
  } else if (is_refusal(reply)) {
    if (options_.starttls == StartTlsPolicy::kRequired) {
      std::string text = reply.to_string();
      if (text.size() > 200) text.resize(200);
      fail_locally("TLS required but STARTTLS refused by server: " + text, /*send_quit=*/true);
      return;
    }
    starttls_refused_ = true;
    after_ehlo();  // on in plaintext
  } else {
    unexpected_reply(Command::kStartTls, reply);
  }
}

void ClientSession::start_auth() {
  const AuthCredentials& auth = *options_.auth;
  if (!secure_ && !auth.allow_plaintext) {
    fail_locally("refusing to send credentials over a plaintext connection", /*send_quit=*/true);
    return;
  }
  if (has_word(capabilities_.auth_mechanisms, "PLAIN")) {
    std::string response = plain_response(auth);
    queue_secret(secret_line("AUTH PLAIN ", response), Command::kAuth);
    wipe_secret(response);
  } else if (has_word(capabilities_.auth_mechanisms, "LOGIN")) {
    queue_command({"AUTH LOGIN\r\n"}, Command::kAuthLogin);
  } else {
    auth_failed_ = true;
    const std::string& offered = capabilities_.auth_mechanisms;
    fail_locally("no AUTH mechanism we support (PLAIN, LOGIN) offered by server" +
                     (offered.empty() ? std::string(": none offered")
                                      : " (offered: " + offered.substr(0, 100) + ")"),
                 /*send_quit=*/true);
  }
}

void ClientSession::on_auth(Command command, const Reply& reply) {
  if (reply.positive_completion()) {
    authenticated_ = true;
    wipe_secret(options_.auth->password);
    handshake_done();
  } else if (reply.positive_intermediate() && command == Command::kAuthLogin) {
    // RFC 4954 §4: each 334 carries a challenge ("Username:", "Password:" in base64);
    // LOGIN's order is fixed, so the text is not needed.
    queue_secret(secret_line("", options_.auth->username), Command::kAuthUsername);
  } else if (reply.positive_intermediate() && command == Command::kAuthUsername) {
    queue_secret(secret_line("", options_.auth->password), Command::kAuth);
  } else if (is_refusal(reply)) {
    auth_failed_ = reply.permanent_failure();
    wipe_secret(options_.auth->password);
    fail_session(reply, /*send_quit=*/true);
  } else {
    unexpected_reply(command, reply);
  }
}

bool ClientSession::is_auth(Command command) {
  return command == Command::kAuth || command == Command::kAuthLogin ||
         command == Command::kAuthUsername;
}

void ClientSession::redact_credentials(std::string& text) const {
  if (!options_.auth || options_.auth->password.empty()) return;
  const AuthCredentials& auth = *options_.auth;
  replace_all(text, auth.password, "<redacted>");
  std::string encoded = base64_encode(auth.password);
  replace_all(text, encoded, "<redacted>");
  wipe_secret(encoded);
  std::string plain = plain_response(auth);
  encoded = base64_encode(plain);
  wipe_secret(plain);
  replace_all(text, encoded, "<redacted>");
  wipe_secret(encoded);
}

void ClientSession::handshake_done() {
  // Only now is the last EHLO reply known (the one after STARTTLS, if any).
  pipelining_ = capabilities_.pipelining && options_.allow_pipelining;
  accepted_ = true;
  phase_ = quit_requested_ ? SessionPhase::kQuitting : SessionPhase::kReady;
}

void ClientSession::on_mail(const Reply& reply) {
  Pending& p = pending_.front();
  p.got_reply = true;
  if (reply.positive_completion()) {
    if (!pipelining_) queue_rcpt(p, 0);
  } else if (is_refusal(reply)) {
    for (RecipientOutcome& r : p.outcome.recipients) r = {status_of(reply), reply};
    p.mail_failed = true;
    if (!pipelining_) {
      // Lock-step: nothing else of this transaction was sent, so it ends here.
      p.send = SendStage::kDone;
      need_rset_ = true;
      finish_front(/*by_server=*/true);
    }
  } else {
    unexpected_reply(Command::kMail, reply);
  }
}

void ClientSession::on_rcpt(const Reply& reply) {
  if (!reply.positive_completion() && !is_refusal(reply)) {
    unexpected_reply(Command::kRcpt, reply);
    return;
  }
  Pending& p = pending_.front();
  const size_t index = p.rcpt_replies++;
  // After a refused MAIL the RCPT replies (503 "need MAIL") change nothing.
  if (!p.mail_failed) {
    RecipientOutcome& outcome = p.outcome.recipients[index];
    if (reply.positive_completion()) {
      outcome.reply.code = reply.code;  // accepted; the dot's reply will replace it
      ++p.accepted;
    } else if (reply.code == 552) {
      // RFC 5321 4.5.3.1.10: 552 to RCPT is an old spelling of 452 "too many recipients";
      // treated as temporary (as Postfix does), or the rest of a batch would be lost.
      outcome = {RecipientStatus::kDeferred, reply, true};
    } else {
      outcome = {status_of(reply), reply, true};
    }
  }
  if (pipelining_) return;  // DATA was sent with the RCPTs
  if (p.rcpt_replies < p.outcome.recipients.size()) {
    queue_rcpt(p, p.rcpt_replies);
  } else if (p.accepted > 0) {
    queue_command({"DATA\r\n"}, Command::kData);
  } else {
    p.send = SendStage::kDone;
    need_rset_ = true;
    finish_front(/*by_server=*/true);
  }
}

void ClientSession::on_data(const Reply& reply) {
  Pending& p = pending_.front();
  if (reply.positive_intermediate()) {
    if (p.accepted > 0) {
      queue_body_and_dot(p);
    } else {
      // Pipelined DATA after every RCPT was refused, and the server opened it anyway:
      // end it at once without content.
      queue_command({".\r\n"}, Command::kDotWithoutRecipients);
      need_rset_ = true;
    }
    p.send = SendStage::kDone;
  } else if (is_refusal(reply)) {
    for (RecipientOutcome& r : p.outcome.recipients)
      if (undecided(r)) r = {status_of(reply), reply};
    p.send = SendStage::kDone;
    need_rset_ = true;
    finish_front(/*by_server=*/true);
  } else {
    unexpected_reply(Command::kData, reply);
  }
}

void ClientSession::on_dot(Reply& reply) {
  if (!reply.positive_completion() && !is_refusal(reply)) {
    unexpected_reply(Command::kDot, reply);
    return;
  }
  Pending& p = pending_.front();
  const RecipientStatus status = status_of(reply);
  RecipientOutcome* last = nullptr;
  for (RecipientOutcome& r : p.outcome.recipients) {
    if (!undecided(r)) continue;
    if (last != nullptr) *last = {status, reply};
    last = &r;
  }
  // The common single-recipient case takes the reply without a copy.
  if (last != nullptr) *last = {status, std::move(reply)};
  finish_front(/*by_server=*/true);
}

// ---- Sending decisions ----------------------------------------------------------------

void ClientSession::pump() {
  if (phase_ != SessionPhase::kReady && phase_ != SessionPhase::kQuitting) return;
  if (quit_queued_) return;
  if (pipelining_) {
    // RFC 2920: a whole envelope per write, and the next one right after the previous
    // transaction's dot (or after the DATA reply that aborted it).
    for (size_t i = 0; i < pending_.size(); ++i) {
      Pending& p = pending_[i];
      if (p.send != SendStage::kNotSent) continue;
      if (i > 0 && pending_[i - 1].send != SendStage::kDone) break;
      queue_envelope(p);
    }
  } else if (expected_.empty() && !pending_.empty()) {
    // Lock-step: only here when no command is in flight.
    Pending& p = pending_.front();
    assert(p.send == SendStage::kNotSent);
    if (need_rset_) {
      queue_command({"RSET\r\n"}, Command::kRset);
      need_rset_ = false;
      return;
    }
    queue_mail(p);
    p.send = SendStage::kEnvelopeSent;
  }
  if (quit_requested_ && (pending_.empty() || (pipelining_ && all_sent()))) queue_quit();
}

bool ClientSession::all_sent() const {
  // With PIPELINING, QUIT may end the group that holds the last dot (RFC 2920 §3.1): the
  // connection closes a round trip sooner than after the dot's reply.
  for (size_t i = 0; i < pending_.size(); ++i)
    if (pending_[i].send != SendStage::kDone) return false;
  return true;
}

void ClientSession::queue_quit() {
  queue_command({"QUIT\r\n"}, Command::kQuit);
  quit_queued_ = true;
  phase_ = SessionPhase::kQuitting;
}

// ---- Ending transactions and the session ------------------------------------------------

void ClientSession::finish_front(bool by_server) {
  finished_.push_back(std::move(pending_.front().outcome));
  pending_.pop_front();
  if (by_server) ++completed_;
}

void ClientSession::fail_session(const Reply& reply, bool send_quit) {
  while (!pending_.empty()) {
    Pending& p = pending_.front();
    for (RecipientOutcome& r : p.outcome.recipients)
      if (undecided(r)) r = {RecipientStatus::kDeferred, reply};
    const bool mail_sent = p.mail_offset != UINT64_MAX && sent_bytes_ > p.mail_offset;
    p.outcome.not_attempted = !p.got_reply && !mail_sent;
    finish_front(/*by_server=*/false);
  }
  expected_.clear();
  if (send_quit && !output_withdrawn_ && !quit_queued_) {
    command_buffer(6) += "QUIT\r\n";  // no reply awaited: the session is over either way
    queued_bytes_ += 6;
  } else {
    withdraw_output();
  }
  phase_ = SessionPhase::kClosed;
}

void ClientSession::fail_locally(std::string text, bool send_quit) {
  fail_session(local_reply(kSecurity, std::move(text)), send_quit);
}

void ClientSession::protocol_error(std::string what) {
  fail_session(local_reply(kProtocolError, "protocol error: " + what), /*send_quit=*/false);
}

void ClientSession::unexpected_reply(Command command, const Reply& reply) {
  std::string text = reply.to_string();
  if (text.size() > 200) text.resize(200);
  protocol_error(std::string("unexpected reply to ") + command_name(int(command)) + ": " + text);
}

void ClientSession::abort(EnhancedCode enhanced, std::string_view reason) {
  if (phase_ == SessionPhase::kClosed) {
    withdraw_output();  // e.g. the QUIT after a refused greeting: the connection is gone
    return;
  }
  fail_session(local_reply(enhanced, std::string(reason)), /*send_quit=*/false);
}

// ---- TLS ------------------------------------------------------------------------------------

bool ClientSession::wants_tls_handshake() const { return phase_ == SessionPhase::kTlsHandshake; }

void ClientSession::tls_established() {
  if (phase_ != SessionPhase::kTlsHandshake) return;
  secure_ = true;
  capabilities_ = Capabilities{};  // RFC 3207 §4.2: forget what was learnt in plaintext
  parser_.reset();
  if (quit_requested_ && pending_.empty()) {
    accepted_ = true;
    queue_quit();
    return;
  }
  phase_ = SessionPhase::kGreeting;
  queue_command({"EHLO ", options_.helo_name, "\r\n"}, Command::kEhlo);
}

void ClientSession::tls_failed(std::string_view reason) {
  if (phase_ == SessionPhase::kClosed) return;
  fail_locally("TLS handshake failed: " + std::string(reason), /*send_quit=*/false);
}

// ---- Work ---------------------------------------------------------------------------------

bool ClientSession::can_accept_transaction() const {
  return (phase_ == SessionPhase::kConnecting || phase_ == SessionPhase::kGreeting ||
          phase_ == SessionPhase::kTlsHandshake || phase_ == SessionPhase::kReady) &&
         !quit_requested_ && pending_.size() < max_queued_transactions();
}

size_t ClientSession::max_queued_transactions() const { return pipelining_ ? 2 : 1; }

void ClientSession::add_transaction(Transaction transaction) {
  TransactionOutcome rejected;
  const bool closed = phase_ == SessionPhase::kClosed || quit_requested_;
  bool bad_address = has_line_break(transaction.sender);
  for (const std::string& r : transaction.recipients) bad_address |= has_line_break(r);
  if (closed || bad_address || transaction.recipients.empty()) {
    // Given straight back: nothing of it is sent.
    Reply why = closed ? local_reply(kConnectionLost, "session closing or closed")
                       : local_reply(kBadAddress, "address contains CR or LF");
    const RecipientStatus status = closed ? RecipientStatus::kDeferred : RecipientStatus::kBounced;
    rejected.recipients.assign(transaction.recipients.size(), RecipientOutcome{status, why});
    rejected.transaction = std::move(transaction);
    rejected.not_attempted = true;
    finished_.push_back(std::move(rejected));
    return;
  }
  Pending& p = pending_.push_back();
  p = Pending{};
  p.outcome.recipients.resize(transaction.recipients.size());
  p.outcome.transaction = std::move(transaction);
  pump();
}

size_t ClientSession::queued_transactions() const { return pending_.size(); }

void ClientSession::quit() {
  if (phase_ == SessionPhase::kClosed || quit_requested_) return;
  quit_requested_ = true;
  // Before the handshake ends, the greeting/EHLO handlers carry on to QUIT.
  if (phase_ == SessionPhase::kReady) {
    phase_ = SessionPhase::kQuitting;
    pump();
  }
}

// ---- State --------------------------------------------------------------------------------

std::vector<TransactionOutcome>& ClientSession::finished() { return finished_; }

SessionPhase ClientSession::phase() const { return phase_; }

Awaiting ClientSession::awaiting() const {
  if (phase_ == SessionPhase::kTlsHandshake) return Awaiting::kCommand;  // see the header
  if (phase_ == SessionPhase::kClosed || expected_.empty()) return Awaiting::kNothing;
  switch (expected_.front()) {
    case Command::kGreeting:
      return Awaiting::kGreeting;
    case Command::kData:
      return Awaiting::kDataStart;
    case Command::kDot:
    case Command::kDotWithoutRecipients:
      return Awaiting::kDataEnd;
    default:
      return Awaiting::kCommand;
  }
}

bool ClientSession::idle() const { return phase_ == SessionPhase::kReady && pending_.empty(); }

const Capabilities& ClientSession::capabilities() const { return capabilities_; }

uint64_t ClientSession::transactions_completed() const { return completed_; }

bool ClientSession::secure() const { return secure_; }

bool ClientSession::authenticated() const { return authenticated_; }

bool ClientSession::auth_failed() const { return auth_failed_; }

}  // namespace ringmail::smtp

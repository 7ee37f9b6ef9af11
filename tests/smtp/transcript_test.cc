// Golden transcripts of whole sessions. Each transcripts/NAME.in is a script (options,
// messages, transactions, and the server's side as chunks); running it produces a log of
// everything the client wrote and every outcome, compared with NAME.ref. Each script runs
// twice: chunks fed in one block with every send completing at once, and one byte at a
// time with sends completing in random pieces. Both must give the same log.
//
// Script lines:
//   # comment                      option helo NAME | pipelining off | max_line N |
//                                    starttls never|if-offered|required | implicit_tls on |
//                                    auth USER PASSWORD [plaintext]
//   body NAME TEXT                 message content (escapes \r \n \t \\ \xHH), encoded
//   txn ID SENDER RCPT[,RCPT] BODY added in order whenever the session can accept one
//                                  ("-" is the null sender)
//   quit                           from here on, quit() once every txn has been added
//   S: TEXT                        a server line (CRLF appended); consecutive S: / S~
//   S~ TEXT                        lines form one chunk; S~ appends TEXT without CRLF
//   --                             ends a chunk
//   abort X.Y.Z TEXT               the transport calls abort()
//   tls established                the transport finished the TLS handshake: tls_established()
//   tls failed TEXT                it failed: tls_failed(TEXT)
// With auth set, no outcome may contain the password or a base64 form of it.
// Set RINGMAIL_UPDATE_GOLDEN=1 to rewrite the .ref files from the block run.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "smtp/base64.h"
#include "smtp/client_session.h"
#include "smtp/message_body.h"

namespace ringmail::smtp {
namespace {

namespace fs = std::filesystem;

std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    switch (c) {
      case 'r':
        out += '\r';
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'x':
        out += char(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
        i += 2;
        break;
      default:
        out += c;
        break;
    }
  }
  return out;
}

std::string escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '\\')
      out += "\\\\";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (u < 0x20 || u >= 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

// One "P: " line per CRLF-terminated line of `bytes`; anything else shown as "P~ ".
void log_lines(std::string& log, char who, std::string_view bytes) {
  while (!bytes.empty()) {
    size_t crlf = bytes.find("\r\n");
    if (crlf == std::string_view::npos) {
      log += std::string(1, who) + "~ " + escape(bytes) + "\n";
      return;
    }
    log += std::string(1, who) + ": " + escape(bytes.substr(0, crlf)) + "\n";
    bytes.remove_prefix(crlf + 2);
  }
}

const char* phase_name(SessionPhase p) {
  switch (p) {
    case SessionPhase::kConnecting:
      return "connecting";
    case SessionPhase::kGreeting:
      return "greeting";
    case SessionPhase::kTlsHandshake:
      return "tls-handshake";
    case SessionPhase::kReady:
      return "ready";
    case SessionPhase::kQuitting:
      return "quitting";
    case SessionPhase::kClosed:
      return "closed";
  }
  return "?";
}

const char* awaiting_name(Awaiting a) {
  switch (a) {
    case Awaiting::kNothing:
      return "nothing";
    case Awaiting::kGreeting:
      return "greeting";
    case Awaiting::kCommand:
      return "command";
    case Awaiting::kDataStart:
      return "data-start";
    case Awaiting::kDataEnd:
      return "data-end";
  }
  return "?";
}

struct Step {
  enum Kind { kChunk, kAbort, kQuit, kTlsEstablished, kTlsFailed } kind;
  std::string data;
  EnhancedCode code;
};

struct Script {
  SessionOptions options;
  std::vector<Transaction> transactions;
  std::vector<Step> steps;
};

Script load(const fs::path& path) {
  Script script;
  script.options.helo_name = "client.example";
  std::map<std::string, EncodedBody> bodies;
  std::ifstream in(path);
  std::string line;
  bool in_chunk = false;
  while (std::getline(in, line)) {
    if (line.starts_with("S: ") || line.starts_with("S~ ") || line == "S:" || line == "S~") {
      if (!in_chunk) script.steps.push_back({Step::kChunk, "", {}});
      in_chunk = true;
      script.steps.back().data += unescape(line.size() > 3 ? line.substr(3) : "");
      if (line[1] == ':') script.steps.back().data += "\r\n";
      continue;
    }
    in_chunk = false;
    if (line.empty() || line[0] == '#' || line == "--") continue;
    std::istringstream words(line);
    std::string verb;
    words >> verb;
    if (verb == "option") {
      std::string name, value;
      words >> name >> value;
      if (name == "helo")
        script.options.helo_name = value;
      else if (name == "pipelining")
        script.options.allow_pipelining = value != "off";
      else if (name == "max_line")
        script.options.reply_limits.max_line_bytes = std::stoul(value);
      else if (name == "starttls" && value == "never")
        script.options.starttls = StartTlsPolicy::kNever;
      else if (name == "starttls" && value == "if-offered")
        script.options.starttls = StartTlsPolicy::kIfOffered;
      else if (name == "starttls" && value == "required")
        script.options.starttls = StartTlsPolicy::kRequired;
      else if (name == "implicit_tls")
        script.options.implicit_tls = value == "on";
      else if (name == "auth") {
        AuthCredentials auth;
        auth.username = value;
        std::string flag;
        words >> auth.password >> flag;
        auth.allow_plaintext = flag == "plaintext";
        script.options.auth = std::move(auth);
      } else
        ADD_FAILURE() << "unknown option " << name;
    } else if (verb == "body") {
      std::string name;
      words >> name;
      std::string rest;
      std::getline(words, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      bodies[name] = std::make_shared<const std::string>(encode_data_body(unescape(rest)));
    } else if (verb == "txn") {
      Transaction t;
      std::string sender, recipients, body;
      words >> t.id >> sender >> recipients >> body;
      t.sender = sender == "-" ? "" : sender;
      for (size_t at = 0; at <= recipients.size();) {
        size_t comma = std::min(recipients.find(',', at), recipients.size());
        t.recipients.push_back(recipients.substr(at, comma - at));
        at = comma + 1;
      }
      EXPECT_TRUE(bodies.contains(body)) << "unknown body " << body;
      t.body = bodies[body];
      script.transactions.push_back(std::move(t));
    } else if (verb == "quit") {
      script.steps.push_back({Step::kQuit, "", {}});
    } else if (verb == "tls") {
      std::string what, reason;
      words >> what;
      std::getline(words, reason);
      if (!reason.empty() && reason[0] == ' ') reason.erase(0, 1);
      if (what == "established")
        script.steps.push_back({Step::kTlsEstablished, "", {}});
      else if (what == "failed")
        script.steps.push_back({Step::kTlsFailed, reason, {}});
      else
        ADD_FAILURE() << path << ": unknown line " << line;
    } else if (verb == "abort") {
      std::string code, reason;
      words >> code;
      std::getline(words, reason);
      if (!reason.empty() && reason[0] == ' ') reason.erase(0, 1);
      Step step{Step::kAbort, reason, {}};
      EXPECT_TRUE(parse_enhanced_code(code, step.code)) << code;
      script.steps.push_back(std::move(step));
    } else {
      ADD_FAILURE() << path << ": unknown line " << line;
    }
  }
  return script;
}

// Plays the transport: adds transactions when allowed, sends everything the session
// offers, and logs outputs, outcomes and state changes.
class Player {
 public:
  Player(const Script& script, bool bytewise)
      : script_(script), bytewise_(bytewise), session_(script.options) {
    if (const auto& auth = script.options.auth; auth && !auth->password.empty()) {
      std::string plain = std::string(1, '\0') + auth->username + '\0' + auth->password;
      secrets_ = {auth->password, base64_encode(auth->password), base64_encode(plain)};
    }
  }

  std::string run() {
    settle();
    for (const Step& step : script_.steps) {
      switch (step.kind) {
        case Step::kChunk:
          log_lines(log_, 'S', step.data);
          if (bytewise_) {
            for (char c : step.data) session_.receive(std::string_view(&c, 1));
          } else {
            session_.receive(step.data);
          }
          break;
        case Step::kAbort:
          log_ += "! abort " + step.code.to_string() + " " + step.data + "\n";
          session_.abort(step.code, step.data);
          break;
        case Step::kQuit:
          quit_wanted_ = true;
          break;
        case Step::kTlsEstablished:
          log_ += "! tls established\n";
          session_.tls_established();
          break;
        case Step::kTlsFailed:
          log_ += "! tls failed " + step.data + "\n";
          session_.tls_failed(step.data);
          break;
      }
      settle();
    }
    log_ += "# end: phase " + std::string(phase_name(session_.phase())) + ", completed " +
            std::to_string(session_.transactions_completed()) + ", queued " +
            std::to_string(session_.queued_transactions()) + ", unsent bytes " +
            std::to_string(session_.pending_output_bytes()) + "\n";
    return log_;
  }

 private:
  void settle() {
    while (next_ < script_.transactions.size() && session_.can_accept_transaction())
      session_.add_transaction(script_.transactions[next_++]);
    if (quit_wanted_ && !quit_called_ && next_ == script_.transactions.size()) {
      quit_called_ = true;
      session_.quit();
    }
    send_all();
    for (const TransactionOutcome& o : session_.finished()) {
      log_ += "= txn " + std::to_string(o.transaction.id) +
              (o.not_attempted ? " not attempted\n" : "\n");
      EXPECT_EQ(o.recipients.size(), o.transaction.recipients.size());
      for (size_t i = 0; i < o.recipients.size(); ++i) {
        const Reply& r = o.recipients[i].reply;
        for (const std::string& secret : secrets_)
          EXPECT_EQ(r.to_string().find(secret), std::string::npos) << "credentials in outcome";
        char code[8];
        std::snprintf(code, sizeof code, "%03d", r.code);
        log_ += "=   " + o.transaction.recipients[i] + " " + to_string(o.recipients[i].status) +
                " " + code + " " + (r.enhanced.present() ? r.enhanced.to_string() : "-") + " " +
                escape(r.text) + "\n";
      }
    }
    session_.finished().clear();
    std::string state = std::string(phase_name(session_.phase())) + ", awaiting " +
                        awaiting_name(session_.awaiting()) + ", queued " +
                        std::to_string(session_.queued_transactions()) +
                        (session_.idle() ? ", idle" : "") +
                        (session_.wants_tls_handshake() ? ", wants tls handshake" : "") +
                        (session_.secure() ? ", secure" : "") +
                        (session_.authenticated() ? ", authenticated" : "") +
                        (session_.auth_failed() ? ", auth failed" : "");
    if (state != last_state_) log_ += ". " + state + "\n";
    last_state_ = state;
  }

  void send_all() {
    std::array<std::string_view, 16> segments;
    size_t n = session_.pending_output(segments);
    if (n == 0) {
      EXPECT_EQ(session_.pending_output_bytes(), 0u);
      return;
    }
    std::string bytes;
    for (size_t i = 0; i < n; ++i) bytes.append(segments[i]);
    ASSERT_EQ(bytes.size(), session_.pending_output_bytes()) << "more than 16 segments";
    log_ += "> write: " + std::to_string(n) + (n == 1 ? " segment, " : " segments, ") +
            std::to_string(bytes.size()) + " bytes\n";
    log_lines(log_, 'C', bytes);
    if (!bytewise_) {
      session_.mark_sent(bytes.size());
      return;
    }
    // Partial sends: what is still pending is always the rest of what was offered.
    size_t sent = 0;
    while (sent < bytes.size()) {
      size_t k = 1 + rng_() % (bytes.size() - sent);
      session_.mark_sent(k);
      sent += k;
      std::string rest;
      n = session_.pending_output(segments);
      for (size_t i = 0; i < n; ++i) rest.append(segments[i]);
      ASSERT_EQ(rest, bytes.substr(sent));
    }
  }

  const Script& script_;
  bool bytewise_;
  ClientSession session_;
  std::string log_;
  std::string last_state_;
  size_t next_ = 0;
  bool quit_wanted_ = false;
  bool quit_called_ = false;
  std::mt19937 rng_{12345};
  std::vector<std::string> secrets_;  // password, base64(password), base64 PLAIN response
};

std::vector<std::string> transcript_names() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(RINGMAIL_TRANSCRIPT_DIR))
    if (entry.path().extension() == ".in") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

class TranscriptTest : public testing::TestWithParam<std::string> {};

TEST_P(TranscriptTest, MatchesGolden) {
  const fs::path dir = RINGMAIL_TRANSCRIPT_DIR;
  const Script script = load(dir / (GetParam() + ".in"));
  const std::string block = Player(script, /*bytewise=*/false).run();
  const std::string bytewise = Player(script, /*bytewise=*/true).run();
  const fs::path ref = dir / (GetParam() + ".ref");
  if (std::getenv("RINGMAIL_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(ref) << block;
  }
  std::ifstream in(ref);
  ASSERT_TRUE(in) << "missing " << ref;
  std::stringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(block, expected.str()) << "fed in blocks";
  EXPECT_EQ(bytewise, expected.str()) << "fed one byte at a time";
}

INSTANTIATE_TEST_SUITE_P(Transcripts, TranscriptTest, testing::ValuesIn(transcript_names()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace ringmail::smtp

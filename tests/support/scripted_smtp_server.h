// A small threaded SMTP server on 127.0.0.1 for what smtp-sink cannot do: a test scripts
// the reply to each command (per connection, per position), chunked or delayed replies,
// unsolicited lines, silent servers; and it keeps a transcript of everything received.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace ringmail::test {

// What the script is asked about.
struct ScriptedCommand {
  // Upper-cased first word: "EHLO", "MAIL", "RCPT", "DATA", "QUIT"...; two pseudo-verbs:
  // "CONNECT" (asks for the greeting; index 0, line empty) and "." (the end of DATA).
  std::string verb{};
  std::string argument{};  // the rest of the line after the verb and its space
  std::string line{};      // the whole line as received, without its line end
  size_t connection = 0;   // 0-based, in accept order
  size_t index = 0;        // 0-based position among this connection's commands
  // RCPTs answered 2xx since the last MAIL answered 2xx (reset by "." RSET EHLO HELO).
  size_t accepted_recipients = 0;
  std::string message{};  // for ".": the DATA content as received (still dot-stuffed)
};

struct ScriptedReply {
  // Bytes sent verbatim: the script writes the CRLFs, so it can send malformed replies.
  // Empty: send nothing for this command.
  std::string text{};
  bool close = false;                  // close the connection after sending `text`
  std::chrono::milliseconds delay{0};  // wait this long before sending
  static ScriptedReply line(std::string reply_line) { return {.text = reply_line + "\r\n"}; }
};

// Returns nullopt to let the server give its standard reply (see ScriptedSmtpServerOptions).
// Called on connection threads, possibly concurrently for different connections.
using SmtpScript = std::function<std::optional<ScriptedReply>(const ScriptedCommand&)>;

struct ScriptedSmtpServerOptions {
  SmtpScript script{};  // may be empty: standard replies only
  // Standard greeting; nullopt: send none (but still answer commands).
  std::optional<std::string> greeting = "220 scripted.test ESMTP";
  // Accept and read, but never send a byte (not even the greeting).
  bool never_answer = false;
  // Standard EHLO reply advertises these, then PIPELINING when asked.
  std::vector<std::string> extensions = {"8BITMIME", "ENHANCEDSTATUSCODES"};
  bool advertise_pipelining = true;
  // 0: replies to all commands of one read go out in one write (like Postfix smtpd).
  // N: every reply is written N bytes at a time, `chunk_delay` apart.
  size_t reply_chunk_bytes = 0;
  std::chrono::milliseconds chunk_delay{2};
  // After the reply to the first command with this verb on a connection, also send
  // `extra_line` (bytes verbatim, e.g. "250 surprise\r\n"). Empty verb: never.
  std::string extra_line_after_verb{};
  std::string extra_line{};
  // Close the connection after replying to a command with this verb. Empty: never.
  std::string close_after_verb{};
  // Connections beyond this many open at once are closed at once, unanswered.
  size_t max_connections = 256;
};

// Everything one connection received (the CONNECT pseudo-command is not recorded).
struct ConnectionTranscript {
  std::vector<std::string> commands{};  // every command line, without its line end, incl. "."
  std::vector<std::string> messages{};  // each DATA content as received, without ".\r\n"
  size_t bare_lf_lines = 0;             // command lines ended by LF without CR
  bool closed = false;                  // the connection has ended
};

class ScriptedSmtpServer {
 public:
  // Listens on an ephemeral port of 127.0.0.1 and starts accepting.
  static std::expected<std::unique_ptr<ScriptedSmtpServer>, std::string> start(
      ScriptedSmtpServerOptions options);
  // Stops accepting, closes every connection and joins every thread. Every wait inside
  // (poll, reply delay, chunk pause) is cut into 20 ms steps, so this takes about 20 ms.
  ~ScriptedSmtpServer();
  ScriptedSmtpServer(const ScriptedSmtpServer&) = delete;
  ScriptedSmtpServer& operator=(const ScriptedSmtpServer&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"

  // Snapshots; safe while connections run. A command is recorded before it is answered,
  // so after a client has seen a reply, the command it answers is in the transcript.
  std::vector<ConnectionTranscript> transcripts() const;
  std::vector<std::string> messages() const;  // all DATA contents, in completion order
  size_t connections_accepted() const;
  size_t max_simultaneous_connections() const;
  // Waits until at least `count` connections were accepted and all of them have ended.
  bool wait_for_closed(size_t count, std::chrono::milliseconds timeout) const;

  // The reply given when the script returns nullopt: 250 to MAIL/RCPT/RSET/NOOP, 354 to
  // DATA (554 when no recipient was accepted), 250 to ".", 221 and close to QUIT, 502 to
  // anything else.
  ScriptedReply standard_reply(const ScriptedCommand& command) const;

  // An unfinished line longer than kMaxLineBytes, or DATA content longer than
  // kMaxMessageBytes, closes the connection.
  static constexpr size_t kMaxLineBytes = 64 * 1024;
  static constexpr size_t kMaxMessageBytes = 64 * 1024 * 1024;

 private:
  explicit ScriptedSmtpServer(ScriptedSmtpServerOptions options);
  void accept_loop();
  void serve(size_t connection_index, int fd);
  bool send_bytes(int fd, const std::string& bytes);  // false: peer gone or stopping
  bool pause(std::chrono::milliseconds duration);     // false: stopping
  void connection_ended(size_t connection_index);

  const ScriptedSmtpServerOptions options_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;

  mutable std::mutex mutex_;  // guards everything below
  mutable std::condition_variable changed_;
  std::vector<ConnectionTranscript> transcripts_;
  std::vector<std::string> messages_;
  std::vector<std::thread> workers_;
  size_t open_connections_ = 0;
  size_t max_simultaneous_ = 0;
};

}  // namespace ringmail::test

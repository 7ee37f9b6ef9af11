// aiosmtpd (Debian python3-aiosmtpd 1.4.3) as a real TLS-capable SMTP peer for one test:
// plaintext, STARTTLS or implicit TLS (port 465 style), optionally with AUTH PLAIN/LOGIN;
// it records every accepted message and AUTH attempt, and the destructor stops and reaps
// it. The Python side is aiosmtpd_server.py next to this file (its docstring lists the
// aiosmtpd quirks it works around).
//
// For "a server that stalls mid-handshake" use ScriptedSmtpServer instead: add "STARTTLS"
// to its extensions and script `220 ready` for the STARTTLS verb; it never speaks TLS.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace ringmail::test {

struct AiosmtpdOptions {
  enum class Tls { kNone, kStartTls, kImplicit };
  Tls tls = Tls::kNone;
  std::filesystem::path cert_file{};  // needed unless kNone (e.g. TestCa::server_cert())
  std::filesystem::path key_file{};
  bool require_starttls = false;  // before STARTTLS, only EHLO/NOOP/QUIT... are allowed
  // Non-empty: AUTH PLAIN and LOGIN are offered (after TLS unless auth_allow_plaintext)
  // and succeed for exactly this user and password.
  std::string auth_user{};
  std::string auth_password{};
  bool auth_required = false;         // MAIL before a successful AUTH gets 530
  bool auth_allow_plaintext = false;  // offer/accept AUTH on a plaintext session too
  bool advertise_pipelining = true;   // aiosmtpd itself never advertises it
  std::string hostname = "aiosmtpd.test";
  std::chrono::milliseconds start_timeout{10000};
  std::string python = "/usr/bin/python3";  // NOT the python3 on PATH: no aiosmtpd there
  std::filesystem::path script{};           // empty: the aiosmtpd_server.py of the source tree
};

// One message the server accepted (answered 250 to the final ".").
struct AiosmtpdMessage {
  std::string helo;
  std::string mail_from;                  // the address only
  std::vector<std::string> mail_options;  // e.g. "SIZE=123", "BODY=8BITMIME"
  std::vector<std::string> rcpt_to;
  std::string content;      // dot-unstuffed, CRLF line ends, without the final ".\r\n"
  bool tls = false;         // the session was TLS (STARTTLS or implicit)
  std::string tls_version;  // "TLSv1.3"
  std::string cipher;
  std::string auth_user;  // empty: not authenticated
};

struct AiosmtpdAuthAttempt {
  std::string mechanism;  // "PLAIN", "LOGIN"
  std::string user;
  bool success = false;
  bool tls = false;
};

class AiosmtpdServer {
 public:
  // Starts the server on a free port of 127.0.0.1 (the Python side binds port 0 and
  // reports it) and waits until it listens, at most options.start_timeout. The error says
  // why (including the server's stderr).
  static std::expected<std::unique_ptr<AiosmtpdServer>, std::string> start(AiosmtpdOptions options);
  // SIGTERM, then SIGKILL after 2 s; reaps the child and removes its files.
  ~AiosmtpdServer();
  AiosmtpdServer(const AiosmtpdServer&) = delete;
  AiosmtpdServer& operator=(const AiosmtpdServer&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  pid_t pid() const { return pid_; }

  // Snapshots, exact once the client has seen the reply: an event is written and flushed
  // before aiosmtpd replies.
  std::vector<AiosmtpdMessage> messages() const;
  size_t message_count() const { return messages().size(); }
  std::vector<AiosmtpdAuthAttempt> auth_attempts() const;
  // Python's stderr so far (tracebacks, aiosmtpd warnings).
  std::string stderr_text() const;
  bool running();
  void stop();  // idempotent; the snapshots stay readable

 private:
  AiosmtpdServer() = default;
  std::string read_file(const std::filesystem::path& path) const;

  AiosmtpdOptions options_;
  std::filesystem::path dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

}  // namespace ringmail::test

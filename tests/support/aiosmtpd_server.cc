#include "tests/support/aiosmtpd_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#ifndef RINGMAIL_AIOSMTPD_SCRIPT
#error "RINGMAIL_AIOSMTPD_SCRIPT must name tests/support/aiosmtpd_server.py"
#endif

namespace ringmail::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

bool reap_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGTERM);
  if (reap_within(pid, std::chrono::milliseconds(2000))) return;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// Each line of the events file is one JSON object; a line still being written (no final
// newline yet) is skipped.
template <typename OnEvent>
void for_each_event(const std::string& text, OnEvent on_event) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) break;
    auto event = nlohmann::json::parse(text.begin() + long(start), text.begin() + long(end),
                                       nullptr, /*allow_exceptions=*/false);
    start = end + 1;
    if (event.is_object()) on_event(event);
  }
}

// JSON strings hold the raw bytes as latin-1 code points (see the script): back to bytes.
std::string latin1_bytes(const nlohmann::json& value) {
  const std::string utf8 = value.get<std::string>();
  std::string bytes;
  bytes.reserve(utf8.size());
  for (size_t i = 0; i < utf8.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      bytes += char(c);
    } else if ((c & 0xE0) == 0xC0 && i + 1 < utf8.size()) {
      bytes += char(((c & 0x1F) << 6) | (static_cast<unsigned char>(utf8[++i]) & 0x3F));
    }
  }
  return bytes;
}

std::vector<std::string> strings(const nlohmann::json& value) {
  std::vector<std::string> out;
  if (value.is_array())
    for (const auto& v : value) out.push_back(latin1_bytes(v));
  return out;
}

}  // namespace

std::expected<std::unique_ptr<AiosmtpdServer>, std::string> AiosmtpdServer::start(
    AiosmtpdOptions options) {
  if (options.script.empty()) options.script = RINGMAIL_AIOSMTPD_SCRIPT;
  if (::access(options.python.c_str(), X_OK) != 0)
    return std::unexpected(options.python + " not found");
  if (options.tls != AiosmtpdOptions::Tls::kNone &&
      (options.cert_file.empty() || options.key_file.empty()))
    return std::unexpected("TLS needs cert_file and key_file");

  std::unique_ptr<AiosmtpdServer> server(new AiosmtpdServer());
  server->options_ = std::move(options);
  const AiosmtpdOptions& o = server->options_;
  std::string tmpl = (std::filesystem::temp_directory_path() / "ringmail-aiosmtpd.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return std::unexpected(errno_text("mkdtemp"));
  server->dir_ = tmpl;  // the destructor removes it from here on
  const std::filesystem::path ready = server->dir_ / "ready";

  // -I: isolated mode, so no PYTHON* variable or user site directory of the test
  // environment changes which aiosmtpd gets imported.
  std::vector<std::string> args = {o.python,
                                   "-I",
                                   o.script.string(),
                                   "--ready-file",
                                   ready.string(),
                                   "--events",
                                   (server->dir_ / "events").string(),
                                   "--hostname",
                                   o.hostname};
  switch (o.tls) {
    case AiosmtpdOptions::Tls::kNone:
      args.insert(args.end(), {"--tls", "none"});
      break;
    case AiosmtpdOptions::Tls::kStartTls:
      args.insert(args.end(), {"--tls", "starttls"});
      break;
    case AiosmtpdOptions::Tls::kImplicit:
      args.insert(args.end(), {"--tls", "implicit"});
      break;
  }
  if (o.tls != AiosmtpdOptions::Tls::kNone)
    args.insert(args.end(), {"--cert", o.cert_file.string(), "--key", o.key_file.string()});
  if (o.require_starttls) args.push_back("--require-starttls");
  if (!o.auth_user.empty()) {
    args.insert(args.end(), {"--auth-user", o.auth_user, "--auth-password", o.auth_password});
    if (o.auth_required) args.push_back("--auth-required");
    if (o.auth_allow_plaintext) args.push_back("--auth-allow-plaintext");
  }
  if (!o.advertise_pipelining) args.push_back("--no-pipelining");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char env_path[] = "PATH=/usr/bin:/bin";
  char env_lang[] = "LANG=C.UTF-8";
  char* envp[] = {env_path, env_lang, nullptr};

  const int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
  int out_fd = ::open((server->dir_ / "stderr").c_str(), flags, 0644);
  if (out_fd < 0) return std::unexpected(errno_text("open stderr file"));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Async-signal-safe calls only: the test process may have threads.
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(out_fd, 2) < 0)
      ::_exit(126);
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // the server dies with its test
    if (::getppid() != parent) ::_exit(124);
    ::execve(argv[0], argv.data(), envp);
    ::_exit(127);
  }
  ::close(out_fd);
  if (pid < 0) return std::unexpected(errno_text("fork"));
  server->pid_ = pid;

  const auto deadline = Clock::now() + o.start_timeout;
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      server->reaped_ = true;
      return std::unexpected("aiosmtpd_server.py exited at start-up (status " +
                             std::to_string(status) + "): " + server->stderr_text());
    }
    // The script writes the port to a temporary name and renames it: whole or absent.
    std::ifstream in(ready);
    unsigned port = 0;
    if (in >> port && port > 0 && port < 65536) {
      server->port_ = uint16_t(port);
      return server;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server->stop();
  return std::unexpected("aiosmtpd_server.py not listening after " +
                         std::to_string(o.start_timeout.count()) +
                         " ms; stderr: " + server->stderr_text());
}

AiosmtpdServer::~AiosmtpdServer() {
  stop();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string AiosmtpdServer::address() const { return "127.0.0.1:" + std::to_string(port_); }

void AiosmtpdServer::stop() {
  if (pid_ <= 0 || reaped_) return;
  kill_and_reap(pid_);
  reaped_ = true;
}

bool AiosmtpdServer::running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == 0) return true;
  reaped_ = true;
  return false;
}

std::string AiosmtpdServer::read_file(const std::filesystem::path& path) const {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string AiosmtpdServer::stderr_text() const { return read_file(dir_ / "stderr"); }

std::vector<AiosmtpdMessage> AiosmtpdServer::messages() const {
  std::vector<AiosmtpdMessage> all;
  for_each_event(read_file(dir_ / "events"), [&](const nlohmann::json& e) {
    if (e.value("event", "") != "message") return;
    AiosmtpdMessage m;
    m.helo = e.value("helo", "");
    m.mail_from = e.value("mail_from", "");
    m.mail_options = strings(e.value("mail_options", nlohmann::json::array()));
    m.rcpt_to = strings(e.value("rcpt_to", nlohmann::json::array()));
    if (e.contains("content")) m.content = latin1_bytes(e["content"]);
    m.tls = e.value("tls", false);
    m.tls_version = e.value("tls_version", "");
    m.cipher = e.value("cipher", "");
    m.auth_user = e.value("auth_user", "");
    all.push_back(std::move(m));
  });
  return all;
}

std::vector<AiosmtpdAuthAttempt> AiosmtpdServer::auth_attempts() const {
  std::vector<AiosmtpdAuthAttempt> all;
  for_each_event(read_file(dir_ / "events"), [&](const nlohmann::json& e) {
    if (e.value("event", "") != "auth") return;
    all.push_back({.mechanism = e.value("mechanism", ""),
                   .user = e.value("user", ""),
                   .success = e.value("success", false),
                   .tls = e.value("tls", false)});
  });
  return all;
}

}  // namespace ringmail::test

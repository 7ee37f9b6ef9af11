#include "tests/dns/dnsmasq_process.h"

// Observed behaviour of dnsmasq 2.90 (Debian 12), checked by hand and pinned by the dns
// tests:
//  - --mx-host=NAME,.,0 serves a null MX (RFC 7505): rdata 00 00 00, the root as target.
//  - --local=/test/ makes dnsmasq authoritative-ish for test: a name without any record is
//    NXDOMAIN, a name with records of other types is NODATA (NOERROR, no answer). Without
//    it, and with no upstream server, unknown names get REFUSED.
//  - Answers from configuration carry TTL 0 unless --local-ttl is given.
//  - An MX answer also carries the targets' A/AAAA records in the additional section.
//  - An answer over 512 bytes (about 25 MX records) is truncated over UDP (TC set); dnsmasq
//    answers the TCP retry from a forked child, which serves the connection until the client
//    closes it (c-ares keeps it open while it has queries). It has no parent-death signal:
//    stop() waits a little for it, then ends the whole process group. Not with --no-daemon: that
//    debug mode serves TCP in the main process, which then reads the connection until the client
//    closes it and answers no UDP meanwhile (c-ares keeps its TCP connection open). So we use
//    --keep-in-foreground alone.
//  - As root it switches to user "nobody" unless --user=root; that credential change would
//    clear the parent-death signal, so as root we pass --user=root.
//  - --log-queries with --log-facility=- writes "dnsmasq[PID]: query[MX] NAME from ADDR" to
//    stderr before answering.
//  - It cannot be told to answer SERVFAIL or REFUSED for a chosen name, or to stay silent:
//    ScriptedDnsServer does that.

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace ringmail::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// A port that was free a moment ago; dnsmasq may still lose it to someone else, which
// start() notices ("Address already in use") and retries.
std::expected<uint16_t, std::string> free_port() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(errno_text("socket"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::string error = errno_text("bind(127.0.0.1:0)");
    ::close(fd);
    return std::unexpected(error);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// True when a DNS server on 127.0.0.1:port answers an A query within `timeout`.
bool answers(uint16_t port, std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  // id 0x5250, RD, one question: ringmail-probe.invalid A IN.
  static const unsigned char kQuery[] = {0x52, 0x50, 0x01, 0x00, 0,   1,   0,   0,   0,   0,
                                         0,    0,    14,   'r',  'i', 'n', 'g', 'm', 'a', 'i',
                                         'l',  '-',  'p',  'r',  'o', 'b', 'e', 7,   'i', 'n',
                                         'v',  'a',  'l',  'i',  'd', 0,   0,   1,   0,   1};
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, kQuery, sizeof kQuery, 0) == static_cast<ssize_t>(sizeof kQuery)) {
    pollfd p{fd, POLLIN, 0};
    unsigned char reply[512];
    if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1)
      ok = ::recv(fd, reply, sizeof reply, 0) >= 12 && reply[0] == 0x52 && reply[1] == 0x50;
  }
  ::close(fd);
  return ok;
}

bool reap_within(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool has_children(pid_t pid) {
  const std::string path =
      "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children";
  std::ifstream in(path);
  std::string first;
  return static_cast<bool>(in >> first);
}

// dnsmasq leads its own process group (see start()), so its TCP children go with it. They
// are given a moment to finish first: killed together with their parent, they would be
// left for init to reap.
void kill_and_reap(pid_t pid) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(500);
  while (has_children(pid) && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(-pid, SIGTERM);
  if (!reap_within(pid, std::chrono::milliseconds(2000))) {
    ::kill(-pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  ::kill(-pid, SIGKILL);  // a TCP child still serving a connection
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

std::expected<std::unique_ptr<DnsmasqProcess>, std::string> DnsmasqProcess::start(
    DnsmasqOptions options) {
  if (::access(options.binary.c_str(), X_OK) != 0)
    return std::unexpected(options.binary +
                           " not found (run scripts/bootstrap: package dnsmasq-base)");
  std::unique_ptr<DnsmasqProcess> server(new DnsmasqProcess());
  server->options_ = std::move(options);
  const DnsmasqOptions& opts = server->options_;

  std::string tmpl = (std::filesystem::temp_directory_path() / "ringmail-dnsmasq.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return std::unexpected(errno_text("mkdtemp"));
  server->dir_ = tmpl;  // from here on the destructor removes it
  const std::filesystem::path output = server->dir_ / "output";

  std::string last_error;
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto port = free_port();
    if (!port) return std::unexpected(port.error());
    std::vector<std::string> args = {opts.binary,
                                     "--keep-in-foreground",
                                     "--conf-file=/dev/null",
                                     "--no-resolv",
                                     "--no-hosts",
                                     "--no-poll",
                                     "--listen-address=127.0.0.1",
                                     "--bind-interfaces",
                                     "--port=" + std::to_string(*port),
                                     "--pid-file=" + (server->dir_ / "pid").string(),
                                     "--log-queries",
                                     "--log-facility=-",
                                     "--local-ttl=" + std::to_string(opts.local_ttl)};
    if (::geteuid() == 0) args.push_back("--user=root");
    for (const std::string& zone : opts.local_zones) args.push_back("--local=/" + zone + "/");
    args.insert(args.end(), opts.records.begin(), opts.records.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    // Prepared before fork: after fork in a threaded process only async-signal-safe calls.
    int out_fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out_fd < 0) return std::unexpected(errno_text("open output file"));
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(out_fd, 2) < 0)
        ::_exit(126);
      ::syscall(SYS_close_range, 3U, ~0U, 0U);
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(124);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out_fd);
    if (pid < 0) return std::unexpected(errno_text("fork"));

    const auto deadline = Clock::now() + opts.start_timeout;
    bool exited = false, ready = false;
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (answers(*port, std::chrono::milliseconds(50))) {
        ready = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (ready) {
      server->pid_ = pid;
      server->port_ = *port;
      return server;
    }
    if (!exited) kill_and_reap(pid);
    std::string text = read_file(output);
    last_error =
        "dnsmasq on port " + std::to_string(*port) + ": " +
        (exited ? "exited at start-up"
                : "no answer after " + std::to_string(opts.start_timeout.count()) + " ms") +
        (text.empty() ? "" : "; output: " + text);
    // A bad option will not go away with another port.
    if (exited && text.find("in use") == std::string::npos) break;
  }
  return std::unexpected(last_error);
}

DnsmasqProcess::~DnsmasqProcess() {
  stop();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string DnsmasqProcess::address() const { return "127.0.0.1:" + std::to_string(port_); }

void DnsmasqProcess::stop() {
  if (pid_ <= 0 || reaped_) return;
  kill_and_reap(pid_);
  reaped_ = true;
}

std::string DnsmasqProcess::output() const { return read_file(dir_ / "output"); }

size_t DnsmasqProcess::queries_logged(std::string_view type, std::string_view name) const {
  const std::string needle = "query[" + std::string(type) + "] " + std::string(name) + " from ";
  std::istringstream lines(output());
  size_t count = 0;
  for (std::string line; std::getline(lines, line);)
    if (line.find(needle) != std::string::npos) ++count;
  return count;
}

}  // namespace ringmail::test

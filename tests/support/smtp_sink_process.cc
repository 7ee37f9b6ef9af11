#include "tests/support/smtp_sink_process.h"

#include <arpa/inet.h>

// Observed behaviour of smtp-sink (Postfix 3.7, Debian 12), checked by hand and pinned by
// smtp_sink_process_test.cc:
//  - It binds with SO_REUSEADDR *and* SO_REUSEPORT, so a second smtp-sink on the same
//    port does not fail: the kernel splits connections between the two. Hence the
//    placeholder socket below, held for the sink's whole life, and the check that every
//    listener on the port is ours.
//  - -f CMD / -r CMD reply "500 5.3.0 Error: command failed" / "450 4.3.0 Error: command
//    failed" to CMD, and both imply -p: PIPELINING is then not advertised.
//  - -q CMD closes the connection without a reply; -Q CMD replies "421 4.0.0 Server
//    closing connection" and closes. CMD may be CONNECT (the greeting): -f/-r CONNECT
//    send a 500/450 greeting and then carry on serving commands.
//  - -b TEXT / -B TEXT replace those soft/hard reply texts (4xx / 5xx only), e.g.
//    -B "550 5.1.1 User unknown".
//  - -n N counts QUIT commands, and only when -c is also given; without -c it never
//    exits. -M N exits right after reading the Nth final ".", before replying to it.
//  - -A DELAY answers DATA with 354, then "550 This violates SMTP" (no enhanced code)
//    after DELAY seconds and closes; the message is not dumped.
//  - Rejected RCPTs are not dumped; DATA with no accepted RCPT gets "503 5.5.1 Error:
//    need RCPT command".
//  - The dump record is appended when the final "." has been read, before the reply to
//    "." is sent, whatever that reply is (-f/-r/-Q/-q ".").

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

namespace ringmail::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kRcptHeader = "X-Rcpt-Args: ";
constexpr std::string_view kMailHeader = "X-Mail-Args: ";
constexpr std::string_view kHeloHeader = "X-Helo-Args: ";
constexpr std::string_view kReceivedHeader = "Received: ";

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// A socket bound to 127.0.0.1:0 and kept open (never listening) so the kernel does not
// hand the same port to another bind(0) or connect() while our sink uses it. SO_REUSEADDR
// on both sides lets smtp-sink bind the port while this socket holds it.
class PortPlaceholder {
 public:
  static std::expected<PortPlaceholder, std::string> open(const std::string& host, uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(errno_text("socket"));
    PortPlaceholder holder(fd);
    int one = 1;
    if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
      return std::unexpected(errno_text("setsockopt(SO_REUSEADDR)"));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
      return std::unexpected("not an IPv4 address: " + host);
    addr.sin_port = htons(port);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      return std::unexpected(errno_text(("bind(" + host + ":" + std::to_string(port) + ")").c_str()));
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      return std::unexpected(errno_text("getsockname"));
    holder.port_ = ntohs(addr.sin_port);
    return holder;
  }
  PortPlaceholder(PortPlaceholder&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)), port_(other.port_) {}
  PortPlaceholder& operator=(PortPlaceholder&&) = delete;
  ~PortPlaceholder() {
    if (fd_ >= 0) ::close(fd_);
  }
  uint16_t port() const { return port_; }
  // The caller owns the descriptor from now on.
  int release() { return std::exchange(fd_, -1); }

 private:
  explicit PortPlaceholder(int fd) : fd_(fd) {}
  int fd_;
  uint16_t port_ = 0;
};

// Inodes of the sockets listening on 127.0.0.1:port (or 0.0.0.0:port), from /proc/net/tcp.
std::set<unsigned long> listening_inodes(in_addr_t address, uint16_t port) {
  std::set<unsigned long> inodes;
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // column titles
  char loopback[16], any[16], port_hex[8];
  // The kernel prints the address as the raw network-order u32 in host hex.
  std::snprintf(loopback, sizeof loopback, "%08X", address);
  std::snprintf(any, sizeof any, "%08X", 0u);
  std::snprintf(port_hex, sizeof port_hex, "%04X", port);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
    unsigned long inode = 0;
    if (!(fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode))
      continue;
    if (state != "0A") continue;  // TCP_LISTEN
    auto colon = local.find(':');
    if (colon == std::string::npos || local.substr(colon + 1) != port_hex) continue;
    std::string host = local.substr(0, colon);
    if (host == loopback || host == any) inodes.insert(inode);
  }
  return inodes;
}

std::set<unsigned long> socket_inodes_of(pid_t pid) {
  std::set<unsigned long> inodes;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return inodes;
  while (dirent* entry = ::readdir(d)) {
    char target[64];
    std::string path = dir + "/" + entry->d_name;
    ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    unsigned long inode = 0;
    if (std::sscanf(target, "socket:[%lu]", &inode) == 1) inodes.insert(inode);
  }
  ::closedir(d);
  return inodes;
}

enum class ListenState { kNotYet, kOurs, kShared };

ListenState listen_state(pid_t pid, const std::string& host, uint16_t port) {
  in_addr address{};
  ::inet_pton(AF_INET, host.c_str(), &address);
  auto listeners = listening_inodes(address.s_addr, port);
  if (listeners.empty()) return ListenState::kNotYet;
  auto ours = socket_inodes_of(pid);
  for (unsigned long inode : listeners)
    if (!ours.contains(inode)) return ListenState::kShared;
  return ListenState::kOurs;
}

// Waits up to `limit` for the child to exit; true when it was reaped.
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

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGTERM);
  if (reap_within(pid, std::chrono::milliseconds(2000))) return;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string random_hex() {
  std::random_device rd;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x%08x%08x", rd(), rd(), rd());
  return buf;
}

// Everything the child needs, prepared before fork: after fork in a threaded process only
// async-signal-safe calls are allowed.
struct ChildPlan {
  std::vector<std::string> args;
  int stdout_fd = -1;
  int stderr_fd = -1;
  bool drop_to_nobody = false;
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t parent = 0;
};

[[noreturn]] void run_child(const ChildPlan& plan, char* const* argv) {
  int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(plan.stdout_fd, 1) < 0 ||
      ::dup2(plan.stderr_fd, 2) < 0)
    ::_exit(126);
  // Nothing else of the test process (sockets, rings, pipes to ctest) leaks into the sink.
  ::syscall(SYS_close_range, 3U, ~0U, 0U);
  if (plan.drop_to_nobody) {
    // Raw syscalls: glibc's setuid() synchronises threads, which this child no longer has.
    if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setgid, plan.gid) != 0 ||
        ::syscall(SYS_setuid, plan.uid) != 0)
      ::_exit(125);
  }
  // Set after the uid change, which would clear it: the sink dies with its test.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != plan.parent) ::_exit(124);
  ::execv(argv[0], argv);
  ::_exit(127);
}

}  // namespace

std::expected<std::unique_ptr<SmtpSinkProcess>, std::string> SmtpSinkProcess::start(
    SmtpSinkOptions options) {
  if (::access(options.binary.c_str(), X_OK) != 0)
    return std::unexpected(options.binary + " not found (run scripts/bootstrap: package postfix)");
  for (const std::string& arg : options.extra_args)
    if (arg == "-u" || arg == "-d" || arg == "-D" || arg == "-S")
      return std::unexpected("SmtpSinkOptions::extra_args must not contain " + arg);

  std::unique_ptr<SmtpSinkProcess> sink(new SmtpSinkProcess());
  sink->options_ = std::move(options);
  const SmtpSinkOptions& opts = sink->options_;

  std::string tmpl = (std::filesystem::temp_directory_path() / "ringmail-sink.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return std::unexpected(errno_text("mkdtemp"));
  sink->dir_ = tmpl;  // from here on the destructor removes it

  ChildPlan plan;
  plan.parent = ::getpid();
  if (::geteuid() == 0) {
    passwd* nobody = ::getpwnam("nobody");
    if (nobody == nullptr) return std::unexpected("user nobody not found");
    plan.drop_to_nobody = true;
    plan.uid = nobody->pw_uid;
    plan.gid = nobody->pw_gid;
    // The sink writes its dump as nobody.
    if (::chown(sink->dir_.c_str(), plan.uid, plan.gid) != 0)
      return std::unexpected(errno_text("chown temp dir"));
  }
  sink->record_marker_ = "X-Ringmail-Sink-Record: " + random_hex();

  std::string last_error;
  const int attempts = opts.port == 0 ? 5 : 1;  // a fixed port is tried once
  for (int attempt = 0; attempt < attempts; ++attempt) {
    auto holder = PortPlaceholder::open(opts.host, opts.port);
    if (!holder) return std::unexpected(holder.error());
    const uint16_t port = holder->port();

    plan.args = {opts.binary};
    switch (opts.capture) {
      case SinkCapture::kDump:
        plan.args.insert(plan.args.end(), {"-D", (sink->dir_ / "dump").string(), "-S",
                                           sink->record_marker_ + "\\n"});
        break;
      case SinkCapture::kCounters:
        plan.args.push_back("-c");
        break;
      case SinkCapture::kNone:
        break;
    }
    plan.args.insert(plan.args.end(), opts.extra_args.begin(), opts.extra_args.end());
    plan.args.push_back(opts.host + ":" + std::to_string(port));
    plan.args.push_back(std::to_string(opts.backlog));
    std::vector<char*> argv;
    for (std::string& a : plan.args) argv.push_back(a.data());
    argv.push_back(nullptr);

    const int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    plan.stdout_fd = ::open((sink->dir_ / "stdout").c_str(), flags, 0644);
    plan.stderr_fd = ::open((sink->dir_ / "stderr").c_str(), flags, 0644);
    if (plan.stdout_fd < 0 || plan.stderr_fd < 0) {
      std::string err = errno_text("open stdout/stderr file");
      if (plan.stdout_fd >= 0) ::close(plan.stdout_fd);
      if (plan.stderr_fd >= 0) ::close(plan.stderr_fd);
      return std::unexpected(err);
    }
    pid_t pid = ::fork();
    if (pid == 0) run_child(plan, argv.data());
    ::close(plan.stdout_fd);
    ::close(plan.stderr_fd);
    if (pid < 0) return std::unexpected(errno_text("fork"));

    const auto deadline = Clock::now() + opts.start_timeout;
    bool exited = false;
    ListenState state = ListenState::kNotYet;
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      state = listen_state(pid, opts.host, port);
      if (state != ListenState::kNotYet) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (state == ListenState::kOurs) {
      sink->pid_ = pid;
      sink->port_ = port;
      sink->port_holder_fd_ = holder->release();
      return sink;
    }
    if (!exited) kill_and_reap(pid);
    std::string stderr_text = sink->read_file(sink->dir_ / "stderr");
    last_error =
        "smtp-sink on port " + std::to_string(port) + ": " +
        (exited ? "exited at start-up"
         : state == ListenState::kShared
             ? "another process listens on the same port"
             : "not listening after " + std::to_string(opts.start_timeout.count()) + " ms") +
        (stderr_text.empty() ? "" : "; stderr: " + stderr_text);
    // A usage error or a bad option will not go away with another port.
    if (exited && stderr_text.find("in use") == std::string::npos) break;
  }
  return std::unexpected(last_error);
}

SmtpSinkProcess::~SmtpSinkProcess() {
  stop();
  if (port_holder_fd_ >= 0) ::close(port_holder_fd_);
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string SmtpSinkProcess::address() const { return options_.host + ":" + std::to_string(port_); }

void SmtpSinkProcess::stop() {
  if (pid_ <= 0 || reaped_) return;
  kill_and_reap(pid_);
  reaped_ = true;
}

bool SmtpSinkProcess::running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == 0) return true;
  reaped_ = true;
  return false;
}

std::string SmtpSinkProcess::read_file(const std::filesystem::path& path) const {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string SmtpSinkProcess::stderr_text() const { return read_file(dir_ / "stderr"); }

void SmtpSinkProcess::require(SinkCapture mode, const char* what) const {
  if (options_.capture == mode) return;
  std::fprintf(stderr, "SmtpSinkProcess::%s needs a different SinkCapture mode\n", what);
  std::abort();
}

namespace {

// Streams the dump file record by record. A record: the marker line, smtp-sink's own
// headers up to the three-line Received: header, then the content up to the next marker.
// `on_record` gets each finished record; content is collected only when wanted.
template <typename OnRecord>
void parse_dump(const std::filesystem::path& path, const std::string& marker, bool want_content,
                OnRecord on_record) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return;  // nothing dumped yet
  enum class Part { kNone, kSinkHeaders, kReceived, kContent } part = Part::kNone;
  SinkTransaction current;
  int received_lines = 0;
  auto finish = [&] {
    if (part == Part::kNone) return;
    // Every record ends with one empty line: the LF of the final ".\r\n".
    if (current.content.ends_with('\n')) current.content.pop_back();
    on_record(std::move(current));
    current = SinkTransaction{};
  };
  std::string line;
  while (std::getline(in, line)) {
    if (line == marker) {
      finish();
      part = Part::kSinkHeaders;
      continue;
    }
    switch (part) {
      case Part::kNone:
        break;
      case Part::kSinkHeaders:
        if (line.starts_with(kRcptHeader)) {
          current.rcpt_to.push_back(line.substr(kRcptHeader.size()));
        } else if (line.starts_with(kMailHeader)) {
          current.mail_from = line.substr(kMailHeader.size());
        } else if (line.starts_with(kHeloHeader)) {
          current.helo = line.substr(kHeloHeader.size());
        } else if (line.starts_with(kReceivedHeader)) {
          part = Part::kReceived;
          received_lines = 1;
        }
        break;
      case Part::kReceived:
        if (++received_lines == 3) part = Part::kContent;
        break;
      case Part::kContent:
        if (want_content) {
          current.content += line;
          current.content += '\n';
        }
        break;
    }
  }
  finish();
}

}  // namespace

uint64_t SmtpSinkProcess::messages_received() const {
  if (options_.capture == SinkCapture::kCounters) {
    // Lines "sess=%d quit=%d mesg=%d\r", one per event; the last one is current.
    std::string text = read_file(dir_ / "stdout");
    auto at = text.rfind("mesg=");
    return at == std::string::npos ? 0 : std::strtoull(text.c_str() + at + 5, nullptr, 10);
  }
  require(SinkCapture::kDump, "messages_received");
  uint64_t messages = 0;
  parse_dump(dir_ / "dump", record_marker_, false, [&](SinkTransaction&&) { ++messages; });
  return messages;
}

uint64_t SmtpSinkProcess::recipients_received() const {
  require(SinkCapture::kDump, "recipients_received");
  uint64_t recipients = 0;
  parse_dump(dir_ / "dump", record_marker_, false,
             [&](SinkTransaction&& t) { recipients += t.rcpt_to.size(); });
  return recipients;
}

std::vector<SinkTransaction> SmtpSinkProcess::transactions() const {
  require(SinkCapture::kDump, "transactions");
  std::vector<SinkTransaction> all;
  parse_dump(dir_ / "dump", record_marker_, true,
             [&](SinkTransaction&& t) { all.push_back(std::move(t)); });
  return all;
}

std::optional<double> SmtpSinkProcess::cpu_seconds() const {
  if (pid_ <= 0 || reaped_) return std::nullopt;
  std::string stat = read_file("/proc/" + std::to_string(pid_) + "/stat");
  auto paren = stat.rfind(')');  // the command name may contain spaces
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(paren + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Fields after ")" start at field 3 (state); utime is field 14, stime 15.
  for (int index = 3; index <= 15 && fields >> field; ++index) {
    if (index == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (index == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace ringmail::test

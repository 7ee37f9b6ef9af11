// Postfix smtp-sink(1) as a real SMTP peer for one test: started on a free loopback port,
// optionally recording every finished transaction, and always stopped and reaped by the
// destructor.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ringmail::test {

// How the sink lets a test count what it received.
enum class SinkCapture {
  // -D dump file (plus a -S record marker): exact messages and recipients, and each
  // transaction's envelope and content. smtp-sink writes a record to disk per message,
  // which costs throughput; use it for correctness tests.
  kDump,
  // -c running counters on stdout: messages only, nearly free. For benchmarks.
  kCounters,
  // Nothing recorded; counts are unavailable.
  kNone,
};

struct SmtpSinkOptions {
  // Passed to smtp-sink before the address, one word per element: {"-f", "RCPT"},
  // {"-Q", "."}, {"-A", "0"}, {"-p"}, {"-W", "rcpt:1"}. Do not pass -u, -d, -D or -S:
  // the process manages those itself. See "Observed behaviour" in smtp_sink_process.cc.
  std::vector<std::string> extra_args{};
  SinkCapture capture = SinkCapture::kDump;
  int backlog = 1024;
  // Where it listens: any IPv4 address of 127.0.0.0/8 (several sinks on 127.0.0.2,
  // 127.0.0.3... stand for several hosts), and a port (0: a free one). A fixed port is
  // tried once.
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  // How long start() waits for the listening socket, per port attempt.
  std::chrono::milliseconds start_timeout{5000};
  std::string binary = "/usr/sbin/smtp-sink";
};

// One transaction as smtp-sink dumped it. smtp-sink writes it after it has read the
// final ".", whatever its reply to "." is (-f/-r/-Q/-q on "." still dump the message).
struct SinkTransaction {
  std::string helo{};                  // argument of the last EHLO/HELO
  std::string mail_from{};             // MAIL arguments after "FROM:", e.g. "<a@b> SIZE=12"
  std::vector<std::string> rcpt_to{};  // arguments of each accepted RCPT after "TO:"
  // Header and body as smtp-sink stored it: LF line ends (every CR dropped) and the first
  // "." of each line removed (so dot-stuffing is undone), without the final "." line.
  std::string content{};
};

class SmtpSinkProcess {
 public:
  // Picks a free port on 127.0.0.1, starts smtp-sink there and waits until it listens;
  // retries with a fresh port when the port was taken in between. The error says why
  // it failed (including smtp-sink's stderr). When run as root the child switches to
  // user "nobody" before exec (smtp-sink refuses to run as root without -u; dropping
  // privileges ourselves keeps the parent-death signal, which a set-uid inside
  // smtp-sink would clear).
  static std::expected<std::unique_ptr<SmtpSinkProcess>, std::string> start(
      SmtpSinkOptions options = {});

  // Stops the sink (SIGTERM, then SIGKILL after 2 s), reaps it and removes its files.
  ~SmtpSinkProcess();
  SmtpSinkProcess(const SmtpSinkProcess&) = delete;
  SmtpSinkProcess& operator=(const SmtpSinkProcess&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  int pid() const { return pid_; }

  // Counts of finished transactions (the sink read the final "."). Exact once the
  // client has seen the reply to each "." it sent: smtp-sink appends the record before
  // it replies. kDump gives both; kCounters only messages. Asking for a count the
  // capture mode does not provide aborts the test (a silent 0 would pass wrongly).
  uint64_t messages_received() const;
  uint64_t recipients_received() const;
  // Every dumped transaction in arrival order (kDump only; aborts otherwise).
  std::vector<SinkTransaction> transactions() const;

  // User plus system CPU time the sink has used so far (/proc/PID/stat fields 14 and
  // 15); nullopt once it has exited.
  std::optional<double> cpu_seconds() const;
  // False once the sink has exited (e.g. after -M, or -n with -c); reaps it then.
  bool running();
  // What smtp-sink wrote to stderr so far (fatal errors, -v transcripts).
  std::string stderr_text() const;
  // Stops the sink now; idempotent. The counters above stay readable.
  void stop();

 private:
  SmtpSinkProcess() = default;

  std::string read_file(const std::filesystem::path& path) const;
  void require(SinkCapture mode, const char* what) const;

  SmtpSinkOptions options_;
  std::filesystem::path dir_;  // private temp directory: dump, stdout, stderr
  std::string record_marker_;  // first line of every dump record (-S)
  uint16_t port_ = 0;
  // Bound, never listening, held until destruction so the kernel hands this port to
  // no other bind(0)/connect(); smtp-sink's SO_REUSEPORT would not notice a second sink.
  int port_holder_fd_ = -1;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

}  // namespace ringmail::test

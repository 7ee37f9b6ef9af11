#include "tests/support/run_command.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringmail::test {
namespace {

constexpr size_t kMaxOutput = 1 << 20;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

std::expected<CommandResult, std::string> run_command(const std::vector<std::string>& argv,
                                                      std::chrono::milliseconds timeout,
                                                      const std::string& input) {
  if (argv.empty() || !argv[0].starts_with('/'))
    return std::unexpected("run_command needs an absolute program path");
  int out_pipe[2], in_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return std::unexpected(errno_text("pipe2"));
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return std::unexpected(errno_text("pipe2"));
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls from here: the parent may have threads.
    if (::dup2(in_pipe[0], 0) < 0 || ::dup2(out_pipe[1], 1) < 0 || ::dup2(out_pipe[1], 2) < 0)
      ::_exit(126);
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(124);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(in_pipe[0]);
  if (pid < 0) {
    std::string err = errno_text("fork");
    ::close(out_pipe[0]);
    ::close(in_pipe[1]);
    return std::unexpected(err);
  }
  // Small inputs only (a script, a message): written before reading, so what does not fit
  // in the pipe is dropped. SIGPIPE is blocked meanwhile (and a pending one consumed), so
  // a child that exits without reading does not kill the test.
  if (!input.empty()) {
    sigset_t pipe_signal, old_mask;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, &old_mask);
    ::fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
    size_t written = 0;
    while (written < input.size()) {
      ssize_t n = ::write(in_pipe[1], input.data() + written, input.size() - written);
      if (n <= 0) break;
      written += size_t(n);
    }
    timespec zero{};
    while (sigtimedwait(&pipe_signal, nullptr, &zero) == SIGPIPE) {
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  }
  ::close(in_pipe[1]);

  CommandResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd p{out_pipe[0], POLLIN, 0};
    int r = ::poll(&p, 1, int(std::min<long>(left.count(), 100)));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(out_pipe[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // every writer closed: the child has (nearly) exited
    if (result.output.size() < kMaxOutput) result.output.append(buf, size_t(n));
  }
  ::close(out_pipe[0]);
  int status = 0;
  for (;;) {
    if (result.timed_out) ::kill(pid, SIGKILL);
    pid_t r = ::waitpid(pid, &status, result.timed_out ? 0 : WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) break;
    if (std::chrono::steady_clock::now() >= deadline)
      result.timed_out = true;
    else
      ::usleep(2000);
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace ringmail::test

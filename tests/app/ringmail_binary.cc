#include "tests/app/ringmail_binary.h"

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>
#include <utility>

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;

std::string file_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

// In the child, between fork and exec: only async-signal-safe calls.
[[noreturn]] void exec_ringmail(std::vector<std::string>& args, const fs::path& out,
                                const fs::path& err, const RingmailOptions& options) {
  if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) _exit(126);
  if (!freopen(out.c_str(), "w", stdout) || !freopen(err.c_str(), "w", stderr)) _exit(125);
  if (options.as_user && (setgroups(0, nullptr) != 0 ||
                          setresgid(*options.as_user, *options.as_user, *options.as_user) != 0 ||
                          setresuid(*options.as_user, *options.as_user, *options.as_user) != 0))
    _exit(126);
  if (options.file_size_limit) {
    signal(SIGXFSZ, SIG_IGN);  // EFBIG from the write rather than death by signal
    rlimit r{*options.file_size_limit, *options.file_size_limit};
    setrlimit(RLIMIT_FSIZE, &r);
  }
  std::vector<char*> argv{const_cast<char*>(RINGMAIL_BINARY)};
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv(RINGMAIL_BINARY, argv.data());
  _exit(127);
}

}  // namespace

RingmailProcess::RingmailProcess(std::vector<std::string> args, const fs::path& output_dir,
                                 RingmailOptions options)
    : out_(output_dir / "stdout"), err_(output_dir / "stderr"), options_(std::move(options)) {
  if (!options_.cwd.empty()) fs::create_directories(options_.cwd);
  started_ = std::chrono::steady_clock::now();
  pid_ = fork();
  if (pid_ == 0) exec_ringmail(args, out_, err_, options_);
}

RingmailProcess::~RingmailProcess() {
  if (pid_ > 0 && !done_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

bool RingmailProcess::running() {
  if (done_) return false;
  if (waitpid(pid_, &status_, WNOHANG) == pid_) done_ = true;
  return !done_;
}

RingmailResult RingmailProcess::wait(std::chrono::seconds timeout) {
  const auto deadline = started_ + timeout;
  while (running()) {
    const auto now = std::chrono::steady_clock::now();
    if (options_.signal_after && !signalled_ && now - started_ >= *options_.signal_after) {
      kill(pid_, options_.signal);
      signalled_ = true;
    }
    if (now > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
      done_ = true;
      ADD_FAILURE() << "ringmail did not finish in " << timeout.count() << " s";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  RingmailResult r;
  r.exit_code = WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  r.out = file_text(out_);
  r.err = file_text(err_);
  return r;
}

RingmailResult run_ringmail(std::vector<std::string> args, const fs::path& output_dir,
                            RingmailOptions options) {
  return RingmailProcess(std::move(args), output_dir, std::move(options)).wait();
}

void RingmailBinaryTest::SetUp() {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  dir_ = fs::temp_directory_path() / ("ringmail-" + std::string(test->test_suite_name()) + "-" +
                                      std::to_string(getpid()) + "-" + test->name());
  fs::remove_all(dir_);
  fs::create_directories(dir_);
}

void RingmailBinaryTest::TearDown() {
  std::error_code ec;
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(dir_, ec);
}

fs::path RingmailBinaryTest::recipients(size_t count, const std::string& name, size_t first) {
  fs::path p = dir_ / name;
  std::ofstream f(p);
  for (size_t i = first; i < first + count; ++i) f << "user" << i << "@example.test\n";
  return p;
}

fs::path RingmailBinaryTest::config(const std::string& text) {
  fs::path p = dir_ / "c.toml";
  std::ofstream(p) << text;
  return p;
}

}  // namespace ringmail::test

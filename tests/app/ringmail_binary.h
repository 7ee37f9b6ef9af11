// The real ringmail binary as a child process for the app end-to-end tests: stdout and
// stderr captured in files, a bounded wait, an optional signal, working directory, user or
// file-size limit; and a fixture with a fresh temporary directory per test.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/loopback_port.h"

namespace ringmail::test {

struct RingmailResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out;
  std::string err;
};

struct RingmailOptions {
  // `signal` is sent once, this long after the start, if the binary is still running.
  std::optional<std::chrono::milliseconds> signal_after{};
  int signal = SIGTERM;
  // Empty: the test's own. Created when missing. (Not an optional<path>: GCC 12 at -O1
  // warns that a designated-initializer temporary of one may be used uninitialized.)
  std::filesystem::path cwd{};
  // Runs as this user (and group of the same id), without supplementary groups. Needs root.
  std::optional<uid_t> as_user{};
  // RLIMIT_FSIZE; past it a write fails with EFBIG instead of killing the process.
  std::optional<rlim_t> file_size_limit{};
};

// The binary started with `args`, its output in `output_dir`/stdout and /stderr (which
// must exist). A binary still running at destruction is killed and reaped.
class RingmailProcess {
 public:
  RingmailProcess(std::vector<std::string> args, const std::filesystem::path& output_dir,
                  RingmailOptions options = {});
  ~RingmailProcess();
  RingmailProcess(const RingmailProcess&) = delete;
  RingmailProcess& operator=(const RingmailProcess&) = delete;

  bool running();
  pid_t pid() const { return pid_; }  // to send a signal of the test's own
  // Waits for the exit, sending the options' signal when due. A binary still running at
  // `timeout` is killed and the test fails, instead of hanging CI.
  RingmailResult wait(std::chrono::seconds timeout = std::chrono::seconds(60));

 private:
  std::filesystem::path out_, err_;
  RingmailOptions options_;
  std::chrono::steady_clock::time_point started_;
  pid_t pid_ = -1;
  int status_ = 0;
  bool done_ = false;
  bool signalled_ = false;
};

// Starts the binary and waits for it.
RingmailResult run_ringmail(std::vector<std::string> args, const std::filesystem::path& output_dir,
                            RingmailOptions options = {});

// A fresh directory per test (named after the suite, the process and the test), removed
// afterwards even if the test made it read-only.
class RingmailBinaryTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  RingmailResult run(std::vector<std::string> args, RingmailOptions options = {}) {
    return run_ringmail(std::move(args), dir_, std::move(options));
  }
  // `count` addresses user<first>@example.test, ... one a line.
  std::filesystem::path recipients(size_t count, const std::string& name = "r.txt",
                                   size_t first = 0);
  // A config file with `text`.
  std::filesystem::path config(const std::string& text);

  std::filesystem::path dir_;
};

}  // namespace ringmail::test

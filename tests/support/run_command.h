// Runs a short-lived command (the openssl CLI, a Python client) to completion for a test:
// bounded in time, output captured, the child killed and reaped whatever happens.
#pragma once

#include <chrono>
#include <expected>
#include <string>
#include <vector>

namespace ringmail::test {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal (including our timeout)
  bool timed_out = false;
  std::string output;  // stdout and stderr interleaved, capped at 1 MiB
};

// argv[0] must be an absolute path (no PATH search: `python3` on PATH is not the system
// interpreter). `input` is written to the child's stdin, which is then closed. The child
// gets SIGKILL if the parent dies. Fails only when the child could not be started.
std::expected<CommandResult, std::string> run_command(
    const std::vector<std::string>& argv,
    std::chrono::milliseconds timeout = std::chrono::seconds(30), const std::string& input = {});

}  // namespace ringmail::test

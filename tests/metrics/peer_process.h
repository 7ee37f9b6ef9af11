// Helpers for the metrics tests: a child process (the real ringmail binary, Prometheus)
// with its output in files, always killed and reaped by the destructor; a blocking
// HTTP/1.0 GET to a loopback port with a deadline; a free loopback port.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/loopback_port.h"

namespace ringmail::test {

struct HttpResponse {
  int status = 0;
  std::string body;
};

// GET http://127.0.0.1:PORT/TARGET. nullopt when nothing answered within `timeout`.
std::optional<HttpResponse> http_get(uint16_t port, const std::string& target,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(5));

// Percent-encodes a query-string value.
std::string url_encode(const std::string& text);

class PeerProcess {
 public:
  // Starts `argv` (argv[0] an absolute path) with stdout and stderr going to the named
  // files. Exits with the test process (PR_SET_PDEATHSIG).
  PeerProcess(std::vector<std::string> argv, std::filesystem::path out, std::filesystem::path err);
  ~PeerProcess();  // SIGKILL and reap, unless already reaped
  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig);
  // Waits up to `timeout`; the exit status (128+signal when killed), or nullopt if still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

  std::string out() const;
  std::string err() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::filesystem::path out_, err_;
};

}  // namespace ringmail::test

#include "tests/support/blocking_smtp_client.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace ringmail::test {
namespace {

constexpr size_t kMaxReplyBytes = 64 * 1024;

int millis_left(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

}  // namespace

std::expected<BlockingSmtpClient, std::string> BlockingSmtpClient::connect(
    uint16_t port, std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::unexpected(std::string("socket: ") + std::strerror(errno));
  BlockingSmtpClient client(fd, timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS)
      return std::unexpected(std::string("connect: ") + std::strerror(errno));
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1)
      return std::unexpected("connect: timed out");
    int error = 0;
    socklen_t len = sizeof error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error != 0) return std::unexpected(std::string("connect: ") + std::strerror(error));
  }
  return client;
}

BlockingSmtpClient::BlockingSmtpClient(BlockingSmtpClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      timeout_(other.timeout_),
      input_(std::move(other.input_)) {}

BlockingSmtpClient::~BlockingSmtpClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool BlockingSmtpClient::send(std::string_view bytes) {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    pollfd p{fd_, POLLOUT, 0};
    if (::poll(&p, 1, millis_left(deadline)) <= 0 && millis_left(deadline) == 0) return false;
  }
  return true;
}

bool BlockingSmtpClient::fill(std::chrono::steady_clock::time_point deadline, bool& eof) {
  eof = false;
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    int ready = ::poll(&p, 1, millis_left(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      input_.append(buf, static_cast<size_t>(n));
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    eof = true;  // orderly close or reset
    return false;
  }
}

std::expected<std::string, std::string> BlockingSmtpClient::read_reply() {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  size_t scanned = 0;  // input_ before this offset holds complete continuation lines
  for (;;) {
    size_t end;
    while ((end = input_.find("\r\n", scanned)) != std::string::npos) {
      std::string_view line(input_.data() + scanned, end - scanned);
      scanned = end + 2;
      if (line.size() < 4 || line[3] != '-') {  // "250 text", "250": the last line
        std::string reply = input_.substr(0, scanned);
        input_.erase(0, scanned);
        return reply;
      }
    }
    if (input_.size() > kMaxReplyBytes) return std::unexpected("reply over 64 KiB");
    bool eof = false;
    if (!fill(deadline, eof))
      return std::unexpected(std::string(eof ? "connection closed" : "timed out") +
                             (input_.empty() ? "" : " after partial reply: " + input_));
  }
}

std::expected<std::string, std::string> BlockingSmtpClient::command(std::string_view line) {
  std::string bytes(line);
  bytes += "\r\n";
  if (!send(bytes)) return std::unexpected(std::string("send failed: ") + std::strerror(errno));
  return read_reply();
}

int BlockingSmtpClient::code(const std::expected<std::string, std::string>& reply) {
  if (!reply || reply->size() < 5) return 0;
  // The last line starts after the second-to-last CRLF.
  size_t start = reply->rfind("\r\n", reply->size() - 3);
  start = start == std::string::npos ? 0 : start + 2;
  int value = 0;
  for (size_t i = start; i < start + 3; ++i) {
    char c = (*reply)[i];
    if (c < '0' || c > '9') return 0;
    value = value * 10 + (c - '0');
  }
  return value;
}

bool BlockingSmtpClient::wait_for_close() {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    bool eof = false;
    if (fill(deadline, eof)) {
      input_.clear();
      continue;
    }
    return eof;
  }
}

}  // namespace ringmail::test

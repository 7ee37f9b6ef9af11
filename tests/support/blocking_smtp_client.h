// A minimal blocking SMTP client for driving test servers by hand: send lines, read whole
// replies, every wait bounded by a timeout. Not a model of a correct client.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::test {

class BlockingSmtpClient {
 public:
  // Connects to 127.0.0.1:port. `timeout` bounds the connect and every later wait.
  static std::expected<BlockingSmtpClient, std::string> connect(
      uint16_t port, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  ~BlockingSmtpClient();
  BlockingSmtpClient(BlockingSmtpClient&& other) noexcept;
  BlockingSmtpClient& operator=(BlockingSmtpClient&&) = delete;
  BlockingSmtpClient(const BlockingSmtpClient&) = delete;

  // Writes `bytes` verbatim (pipelining: several commands in one call). False on error.
  bool send(std::string_view bytes);
  // One complete reply, all its lines with their CRLFs ("250-a\r\n250 b\r\n"). Errors:
  // timeout, connection closed (the text says so and includes any partial reply), or a
  // reply over 64 KiB.
  std::expected<std::string, std::string> read_reply();
  // send(line + "\r\n") then read_reply().
  std::expected<std::string, std::string> command(std::string_view line);
  // The 3-digit code of the reply's last line; 0 when malformed or on error.
  static int code(const std::expected<std::string, std::string>& reply);
  // True when the server closes the connection within the timeout (bytes it sends first
  // are discarded).
  bool wait_for_close();

 private:
  BlockingSmtpClient(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}
  // Reads more input; false on timeout, EOF or error (with `eof` set on EOF).
  bool fill(std::chrono::steady_clock::time_point deadline, bool& eof);

  int fd_ = -1;
  std::chrono::milliseconds timeout_;
  std::string input_;  // received, not yet returned
};

}  // namespace ringmail::test

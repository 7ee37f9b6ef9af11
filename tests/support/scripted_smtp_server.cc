#include "tests/support/scripted_smtp_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace ringmail::test {
namespace {

// Every blocking wait is a poll this long, so stopping is noticed promptly.
constexpr int kPollMillis = 20;
constexpr size_t kReadBytes = 16 * 1024;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

bool is_2xx(const std::string& reply) { return reply.size() >= 3 && reply[0] == '2'; }

ScriptedCommand parse_command(const std::string& line) {
  ScriptedCommand command;
  command.line = line;
  auto space = line.find(' ');
  command.verb = line.substr(0, space);
  if (space != std::string::npos) command.argument = line.substr(space + 1);
  for (char& c : command.verb) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return command;
}

}  // namespace

std::expected<std::unique_ptr<ScriptedSmtpServer>, std::string> ScriptedSmtpServer::start(
    ScriptedSmtpServerOptions options) {
  std::unique_ptr<ScriptedSmtpServer> server(new ScriptedSmtpServer(std::move(options)));
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::unexpected(errno_text("socket"));
  server->listen_fd_ = fd;  // closed by the destructor from here on
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return std::unexpected(errno_text("bind(127.0.0.1:0)"));
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return std::unexpected(errno_text("getsockname"));
  if (::listen(fd, 128) != 0) return std::unexpected(errno_text("listen"));
  server->port_ = ntohs(addr.sin_port);
  server->acceptor_ = std::thread([s = server.get()] { s->accept_loop(); });
  return server;
}

ScriptedSmtpServer::ScriptedSmtpServer(ScriptedSmtpServerOptions options)
    : options_(std::move(options)) {}

ScriptedSmtpServer::~ScriptedSmtpServer() {
  stopping_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  // The acceptor is gone, so no worker is added any more.
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(mutex_);
    workers.swap(workers_);
  }
  for (std::thread& worker : workers) worker.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

std::string ScriptedSmtpServer::address() const { return "127.0.0.1:" + std::to_string(port_); }

void ScriptedSmtpServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, kPollMillis) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    std::lock_guard lock(mutex_);
    if (open_connections_ >= options_.max_connections) {
      ::close(fd);
      continue;
    }
    size_t index = transcripts_.size();
    transcripts_.emplace_back();
    ++open_connections_;
    max_simultaneous_ = std::max(max_simultaneous_, open_connections_);
    workers_.emplace_back([this, index, fd] { serve(index, fd); });
    changed_.notify_all();
  }
}

bool ScriptedSmtpServer::pause(std::chrono::milliseconds duration) {
  const auto deadline = std::chrono::steady_clock::now() + duration;
  while (!stopping_) {
    auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return true;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        left, std::chrono::milliseconds(kPollMillis)));
  }
  return false;
}

bool ScriptedSmtpServer::send_bytes(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    if (stopping_) return false;
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, kPollMillis);
    } else {
      return false;
    }
  }
  return true;
}

void ScriptedSmtpServer::connection_ended(size_t connection_index) {
  std::lock_guard lock(mutex_);
  transcripts_[connection_index].closed = true;
  --open_connections_;
  changed_.notify_all();
}

ScriptedReply ScriptedSmtpServer::standard_reply(const ScriptedCommand& command) const {
  const std::string& verb = command.verb;
  if (verb == "CONNECT") return {.text = options_.greeting ? *options_.greeting + "\r\n" : ""};
  if (verb == "EHLO") {
    std::vector<std::string> lines = {"scripted.test"};
    lines.insert(lines.end(), options_.extensions.begin(), options_.extensions.end());
    if (options_.advertise_pipelining) lines.push_back("PIPELINING");
    std::string text;
    for (size_t i = 0; i < lines.size(); ++i)
      text += "250" + std::string(i + 1 < lines.size() ? "-" : " ") + lines[i] + "\r\n";
    return {.text = text};
  }
  if (verb == "HELO") return ScriptedReply::line("250 scripted.test");
  if (verb == "MAIL") return ScriptedReply::line("250 2.1.0 Ok");
  if (verb == "RCPT") return ScriptedReply::line("250 2.1.5 Ok");
  if (verb == "DATA") {
    if (command.accepted_recipients == 0)
      return ScriptedReply::line("554 5.5.1 Error: no valid recipients");
    return ScriptedReply::line("354 End data with <CR><LF>.<CR><LF>");
  }
  if (verb == ".") return ScriptedReply::line("250 2.0.0 Ok: queued");
  if (verb == "RSET" || verb == "NOOP") return ScriptedReply::line("250 2.0.0 Ok");
  if (verb == "QUIT") return {.text = "221 2.0.0 Bye\r\n", .close = true};
  return ScriptedReply::line("502 5.5.2 Error: command not recognized");
}

void ScriptedSmtpServer::serve(size_t connection_index, int fd) {
  const bool chunked = options_.reply_chunk_bytes > 0;
  std::string pending;  // replies not yet written (coalesced per read when not chunked)
  bool extra_sent = false;
  bool in_mail = false;
  size_t accepted_recipients = 0;
  size_t command_index = 0;
  bool in_data = false;
  std::string message;  // DATA content so far

  auto flush = [&]() -> bool {
    std::string out;
    out.swap(pending);
    if (options_.never_answer || out.empty()) return true;
    if (!chunked) return send_bytes(fd, out);
    for (size_t at = 0; at < out.size(); at += options_.reply_chunk_bytes) {
      if (at > 0 && !pause(options_.chunk_delay)) return false;
      if (!send_bytes(fd, out.substr(at, options_.reply_chunk_bytes))) return false;
    }
    return true;
  };

  // Asks the script (or the standard reply), queues the answer and follows its effect on
  // the transaction state. Returns false when the connection must end.
  auto answer = [&](ScriptedCommand command) -> bool {
    command.connection = connection_index;
    command.accepted_recipients = accepted_recipients;
    std::optional<ScriptedReply> scripted;
    if (options_.script) scripted = options_.script(command);
    ScriptedReply reply = scripted ? std::move(*scripted) : standard_reply(command);

    if (reply.delay.count() > 0 && !(flush() && pause(reply.delay))) return false;
    pending += reply.text;
    if (!options_.extra_line_after_verb.empty() && !extra_sent &&
        command.verb == options_.extra_line_after_verb) {
      pending += options_.extra_line;
      extra_sent = true;
    }
    if (chunked && !flush()) return false;

    const std::string& verb = command.verb;
    const bool ok = is_2xx(reply.text);
    // DATA content follows a 354, whether scripted or standard.
    if (verb == "DATA" && reply.text.starts_with("354")) {
      in_data = true;
      message.clear();
    } else if (verb == "MAIL" && ok) {
      in_mail = true;
      accepted_recipients = 0;
    } else if (verb == "RCPT" && ok && in_mail) {
      ++accepted_recipients;
    } else if (verb == "." || verb == "RSET" || verb == "EHLO" || verb == "HELO") {
      in_mail = false;
      accepted_recipients = 0;
    }
    if (reply.close || (!options_.close_after_verb.empty() && verb == options_.close_after_verb)) {
      flush();
      return false;
    }
    return true;
  };

  bool alive = answer(ScriptedCommand{.verb = "CONNECT"}) && flush();

  std::string input;
  char buf[kReadBytes];
  while (alive && !stopping_) {
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, kPollMillis);
    if (ready == 0 || (ready < 0 && errno == EINTR)) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n <= 0) break;
    input.append(buf, static_cast<size_t>(n));

    // Every complete line of this read, in order: pipelined commands arrive together.
    size_t consumed = 0;
    while (alive) {
      if (in_data) {
        size_t end = input.find("\r\n", consumed);
        if (end == std::string::npos) break;
        std::string line = input.substr(consumed, end - consumed);
        consumed = end + 2;
        if (line != ".") {
          message += line;
          message += "\r\n";
          if (message.size() > kMaxMessageBytes) alive = false;
          continue;
        }
        in_data = false;
        ScriptedCommand command = parse_command(line);
        command.message = message;
        {
          std::lock_guard lock(mutex_);
          command.index = command_index++;
          transcripts_[connection_index].commands.push_back(line);
          transcripts_[connection_index].messages.push_back(message);
          messages_.push_back(std::move(message));
          changed_.notify_all();
        }
        message.clear();
        alive = answer(std::move(command));
        continue;
      }
      size_t end = input.find('\n', consumed);
      if (end == std::string::npos) break;
      std::string line = input.substr(consumed, end - consumed);
      consumed = end + 1;
      bool bare_lf = !line.ends_with('\r');
      if (!bare_lf) line.pop_back();
      ScriptedCommand command = parse_command(line);
      {
        std::lock_guard lock(mutex_);
        command.index = command_index++;
        transcripts_[connection_index].commands.push_back(line);
        if (bare_lf) ++transcripts_[connection_index].bare_lf_lines;
        changed_.notify_all();
      }
      alive = answer(std::move(command));
    }
    input.erase(0, consumed);
    if (input.size() > kMaxLineBytes) alive = false;
    if (alive) alive = flush();
  }
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  connection_ended(connection_index);
}

std::vector<ConnectionTranscript> ScriptedSmtpServer::transcripts() const {
  std::lock_guard lock(mutex_);
  return transcripts_;
}

std::vector<std::string> ScriptedSmtpServer::messages() const {
  std::lock_guard lock(mutex_);
  return messages_;
}

size_t ScriptedSmtpServer::connections_accepted() const {
  std::lock_guard lock(mutex_);
  return transcripts_.size();
}

size_t ScriptedSmtpServer::max_simultaneous_connections() const {
  std::lock_guard lock(mutex_);
  return max_simultaneous_;
}

bool ScriptedSmtpServer::wait_for_closed(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] {
    return transcripts_.size() >= count &&
           std::all_of(transcripts_.begin(), transcripts_.end(),
                       [](const ConnectionTranscript& t) { return t.closed; });
  });
}

}  // namespace ringmail::test

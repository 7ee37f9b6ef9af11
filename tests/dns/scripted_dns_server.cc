#include "tests/dns/scripted_dns_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <sstream>

namespace ringmail::test {
namespace {

constexpr int kPollMillis = 20;
constexpr uint8_t kRcodeNxdomain = 3;
constexpr uint8_t kRcodeServfail = 2;
constexpr uint8_t kRcodeRefused = 5;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

void put16(std::string& out, uint16_t value) {
  out += static_cast<char>(value >> 8);
  out += static_cast<char>(value & 0xff);
}

void put32(std::string& out, uint32_t value) {
  put16(out, static_cast<uint16_t>(value >> 16));
  put16(out, static_cast<uint16_t>(value & 0xffff));
}

// "a.b" or "a.b." or "." in wire format (no compression).
std::string encode_name(const std::string& name) {
  std::string out;
  std::stringstream labels(name);
  std::string label;
  while (std::getline(labels, label, '.')) {
    if (label.empty()) continue;
    out += static_cast<char>(label.size());
    out += label;
  }
  out += '\0';
  return out;
}

std::string rdata_of(const DnsRecord& record) {
  std::string out;
  switch (record.type) {
    case kDnsTypeA: {
      unsigned char bytes[4] = {};
      ::inet_pton(AF_INET, record.data.c_str(), bytes);
      out.assign(reinterpret_cast<char*>(bytes), sizeof bytes);
      break;
    }
    case kDnsTypeAaaa: {
      unsigned char bytes[16] = {};
      ::inet_pton(AF_INET6, record.data.c_str(), bytes);
      out.assign(reinterpret_cast<char*>(bytes), sizeof bytes);
      break;
    }
    case kDnsTypeMx: {
      std::istringstream in(record.data);
      unsigned preference = 0;
      std::string host;
      in >> preference >> host;
      put16(out, static_cast<uint16_t>(preference));
      out += encode_name(host);
      break;
    }
    default:
      out = encode_name(record.data);
  }
  return out;
}

}  // namespace

std::expected<std::unique_ptr<ScriptedDnsServer>, std::string> ScriptedDnsServer::start() {
  std::unique_ptr<ScriptedDnsServer> server(new ScriptedDnsServer());
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::unexpected(errno_text("socket"));
  server->fd_ = fd;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return std::unexpected(errno_text("bind(127.0.0.1:0)"));
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return std::unexpected(errno_text("getsockname"));
  server->port_ = ntohs(addr.sin_port);
  server->thread_ = std::thread([s = server.get()] { s->serve(); });
  return server;
}

ScriptedDnsServer::~ScriptedDnsServer() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

std::string ScriptedDnsServer::address() const { return "127.0.0.1:" + std::to_string(port_); }

void ScriptedDnsServer::set(const std::string& name, uint16_t type, DnsReply reply) {
  std::lock_guard lock(mutex_);
  table_[{name, type}] = std::move(reply);
}

void ScriptedDnsServer::set_fallback(DnsReply reply) {
  std::lock_guard lock(mutex_);
  fallback_ = std::move(reply);
}

size_t ScriptedDnsServer::queries(const std::string& name, uint16_t type) const {
  std::lock_guard lock(mutex_);
  auto it = counts_.find({name, type});
  return it == counts_.end() ? 0 : it->second;
}

size_t ScriptedDnsServer::total_queries() const {
  std::lock_guard lock(mutex_);
  return total_;
}

void ScriptedDnsServer::serve() {
  unsigned char buffer[4096];
  while (!stopping_) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, kPollMillis) <= 0) continue;
    sockaddr_storage from{};
    socklen_t from_length = sizeof from;
    ssize_t n =
        ::recvfrom(fd_, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&from), &from_length);
    if (n <= 0) continue;
    std::string reply = answer(buffer, static_cast<size_t>(n));
    if (reply.empty()) continue;
    ::sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), from_length);
  }
}

std::string ScriptedDnsServer::answer(const unsigned char* query, size_t length) {
  // Header, then exactly one question; anything after it (an EDNS OPT record) is ignored.
  if (length < 12 || query[4] != 0 || query[5] != 1) return {};
  size_t at = 12;
  std::string name;
  while (at < length && query[at] != 0) {
    const size_t label = query[at];
    if (label > 63 || at + 1 + label > length) return {};
    if (!name.empty()) name += '.';
    for (size_t i = 0; i < label; ++i) name += static_cast<char>(std::tolower(query[at + 1 + i]));
    at += 1 + label;
  }
  if (at + 5 > length) return {};
  const size_t question_end = at + 5;
  const uint16_t type = static_cast<uint16_t>((query[at + 1] << 8) | query[at + 2]);

  DnsReply reply;
  {
    std::lock_guard lock(mutex_);
    ++counts_[{name, type}];
    ++total_;
    auto it = table_.find({name, type});
    reply = it != table_.end() ? it->second : fallback_;
  }
  uint8_t rcode = 0;
  switch (reply.action) {
    case DnsReply::Action::kSilent:
      return {};
    case DnsReply::Action::kNxdomain:
      rcode = kRcodeNxdomain;
      break;
    case DnsReply::Action::kServfail:
      rcode = kRcodeServfail;
      break;
    case DnsReply::Action::kRefused:
      rcode = kRcodeRefused;
      break;
    case DnsReply::Action::kAnswer:
      break;
  }
  const bool with_records = reply.action == DnsReply::Action::kAnswer;
  std::string out;
  out.append(reinterpret_cast<const char*>(query), 2);  // id
  // QR, the query's opcode and RD; RA; the rcode.
  out += static_cast<char>(0x80 | (query[2] & 0x79));
  out += static_cast<char>(0x80 | rcode);
  put16(out, 1);
  put16(out, with_records ? static_cast<uint16_t>(reply.records.size()) : 0);
  put16(out, 0);
  put16(out, 0);
  out.append(reinterpret_cast<const char*>(query + 12), question_end - 12);
  if (with_records) {
    for (const DnsRecord& record : reply.records) {
      put16(out, 0xc00c);  // the question's name
      put16(out, record.type);
      put16(out, 1);  // IN
      put32(out, record.ttl);
      std::string rdata = rdata_of(record);
      put16(out, static_cast<uint16_t>(rdata.size()));
      out += rdata;
    }
  }
  return out;
}

}  // namespace ringmail::test

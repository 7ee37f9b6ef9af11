// A tiny UDP DNS server on 127.0.0.1 for what dnsmasq cannot be told to do: answer SERVFAIL
// or REFUSED, never answer, or give each record its own TTL. It answers from a table keyed
// by (name, type) and counts the queries it receives. One thread; every wait is a 20 ms poll.
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace ringmail::test {

inline constexpr uint16_t kDnsTypeA = 1;
inline constexpr uint16_t kDnsTypeCname = 5;
inline constexpr uint16_t kDnsTypeMx = 15;
inline constexpr uint16_t kDnsTypeAaaa = 28;

struct DnsRecord {
  uint16_t type = kDnsTypeA;
  uint32_t ttl = 60;
  // A: "127.0.0.2"; AAAA: "::2"; MX: "10 mx.example" ("0 ." is a null MX); CNAME: a name.
  std::string data{};
};

struct DnsReply {
  enum class Action { kAnswer, kNxdomain, kServfail, kRefused, kSilent };
  Action action = Action::kAnswer;
  std::vector<DnsRecord> records{};  // kAnswer without records: NODATA
};

class ScriptedDnsServer {
 public:
  static std::expected<std::unique_ptr<ScriptedDnsServer>, std::string> start();
  ~ScriptedDnsServer();  // stops and joins the thread (about 20 ms)
  ScriptedDnsServer(const ScriptedDnsServer&) = delete;
  ScriptedDnsServer& operator=(const ScriptedDnsServer&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"

  // How to answer `name` (lower-case, no trailing dot) for `type`. Questions not in the
  // table get `fallback` (NXDOMAIN unless changed). Safe while the server runs.
  void set(const std::string& name, uint16_t type, DnsReply reply);
  void set_fallback(DnsReply reply);
  // Queries received for (name, type) so far, and for everything.
  size_t queries(const std::string& name, uint16_t type) const;
  size_t total_queries() const;

 private:
  ScriptedDnsServer() = default;
  void serve();
  // The reply to one query datagram; empty: send nothing.
  std::string answer(const unsigned char* query, size_t length);

  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;

  mutable std::mutex mutex_;  // guards everything below
  std::map<std::pair<std::string, uint16_t>, DnsReply> table_;
  DnsReply fallback_{.action = DnsReply::Action::kNxdomain};
  std::map<std::pair<std::string, uint16_t>, size_t> counts_;
  size_t total_ = 0;
};

}  // namespace ringmail::test

// dnsmasq (Debian dnsmasq-base 2.90) as a real DNS server for one test: started on a free
// UDP/TCP port of 127.0.0.1 with records given on its command line, logging every query
// so a test can count them, and always stopped and reaped by the destructor. Its quirks
// are listed at the top of dnsmasq_process.cc.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::test {

struct DnsmasqOptions {
  // dnsmasq record options, one per element, e.g. "--mx-host=mx.test,a.mx.test,10",
  // "--mx-host=nullmx.test,.,0" (a null MX), "--host-record=a.mx.test,127.0.0.2,::2",
  // "--txt-record=txt.test,hello", "--address=/bulk.test/127.0.0.9".
  std::vector<std::string> records{};
  // Zones answered from the records only: a name under one of them without a record is
  // NXDOMAIN, a name with other records only is NODATA (--local=/zone/).
  std::vector<std::string> local_zones{"test"};
  // TTL of every answer (--local-ttl); dnsmasq's default is 0, which forbids caching.
  int local_ttl = 60;
  std::chrono::milliseconds start_timeout{5000};
  std::string binary = "/usr/sbin/dnsmasq";
};

class DnsmasqProcess {
 public:
  // Picks a free port, starts dnsmasq in the foreground and waits until it answers a query;
  // retries with another port if that one was taken. The error includes dnsmasq's output.
  static std::expected<std::unique_ptr<DnsmasqProcess>, std::string> start(
      DnsmasqOptions options = {});
  // SIGTERM, then SIGKILL after 2 s; reaps dnsmasq and removes its files.
  ~DnsmasqProcess();
  DnsmasqProcess(const DnsmasqProcess&) = delete;
  DnsmasqProcess& operator=(const DnsmasqProcess&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  pid_t pid() const { return pid_; }

  // Queries dnsmasq has logged for `name` with `type` ("MX", "A", "AAAA"), over UDP and
  // TCP. dnsmasq logs a query before answering it, so once the client has its answer the
  // query is counted.
  size_t queries_logged(std::string_view type, std::string_view name) const;
  // Everything dnsmasq has written (its log is on stderr).
  std::string output() const;
  void stop();  // idempotent

 private:
  DnsmasqProcess() = default;

  DnsmasqOptions options_;
  std::filesystem::path dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

}  // namespace ringmail::test

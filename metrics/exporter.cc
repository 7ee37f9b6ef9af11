#include "metrics/exporter.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <prometheus/exposer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <exception>
#include <ostream>
#include <thread>

namespace ringmail::metrics {

std::expected<void, std::string> validate_listen_address(std::string_view address) {
  // Debian 12's civetweb is built without USE_IPV6: "[::1]:9464" would pass civetweb's
  // parser only to fail later as "null context when constructing CivetServer".
  if (address.starts_with('[') || address.find(':') != address.rfind(':'))
    return std::unexpected(fmt::format(
        "'{}': IPv6 listen addresses are not supported by Debian's civetweb; use "
        "127.0.0.1:PORT or 0.0.0.0:PORT",
        address));
  size_t colon = address.rfind(':');
  if (colon == std::string_view::npos)
    return std::unexpected(fmt::format("'{}': expected ADDRESS:PORT, e.g. {}", address,
                                       kDefaultListen));
  std::string_view host = address.substr(0, colon);
  std::string_view port = address.substr(colon + 1);
  in_addr a4;
  if (inet_pton(AF_INET, std::string(host).c_str(), &a4) != 1)
    return std::unexpected(fmt::format(
        "'{}': '{}' is not a numeric IPv4 address (use 127.0.0.1 or 0.0.0.0)", address, host));
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
    return std::unexpected(fmt::format("'{}': '{}' is not a port (0-65535)", address, port));
  return {};
}

std::expected<std::unique_ptr<Exporter>, std::string> Exporter::start(const std::string& address,
                                                                      std::ostream& announce) {
  if (auto ok = validate_listen_address(address); !ok) return std::unexpected(ok.error());
  std::unique_ptr<Exporter> exporter(new Exporter());
  try {
    // Two HTTP workers: a scrape is microseconds of summing and Prometheus scrapes one at
    // a time; the second serves a human's curl meanwhile. Keep-alive off, so an idle
    // client connection never holds a worker.
    exporter->exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", address, "num_threads", "2", "enable_keep_alive", "no"});
  } catch (const std::exception& e) {
    return std::unexpected(fmt::format("cannot serve metrics on {}: {}", address, e.what()));
  }
  exporter->address_ = address;
  auto ports = exporter->exposer_->GetListeningPorts();
  if (ports.empty()) return std::unexpected(fmt::format("cannot serve metrics on {}", address));
  exporter->port_ = uint16_t(ports.front());
  exporter->address_ = address;
  const size_t colon = address.rfind(':');  // validated: "IPv4:PORT"
  if (address.find_first_not_of('0', colon + 1) == std::string::npos) {  // port 0 (or 00)
    announce << fmt::format("ringmail: serving metrics at http://{}:{}{} (port 0: a free port)\n",
                            address.substr(0, colon), exporter->port_, kMetricsPath)
             << std::flush;
  }
  return exporter;
}

namespace {

// Connects to `port` on the bound IPv4 address (loopback for a wildcard) and closes at once.
void wake_listener(const std::string& address, uint16_t port) {
  std::string host = address.substr(0, address.rfind(':'));
  if (host == "0.0.0.0") host = "127.0.0.1";
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::close(fd);
}

}  // namespace

Exporter::~Exporter() {
  if (!exposer_) return;
  // civetweb's listener polls with a fixed 2-second quantum and looks at its stop flag
  // only between polls, so stopping it could add 2 s to the end of every run. A loopback
  // connection every 20 ms while it stops wakes the poll at once.
  std::atomic<bool> stopped{false};
  std::thread waker([&] {
    while (!stopped.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (!stopped.load()) wake_listener(address_, port_);
    }
  });
  exposer_.reset();
  stopped.store(true);
  waker.join();
}

void Exporter::expose(std::shared_ptr<prometheus::Collectable> collectable) {
  collectable_ = std::move(collectable);
  exposer_->RegisterCollectable(collectable_, std::string(kMetricsPath));
}

}  // namespace ringmail::metrics

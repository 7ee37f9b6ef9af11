// The HTTP endpoint Prometheus scrapes: prometheus-cpp's Exposer (civetweb) on one
// address, serving one Collectable at /metrics. Built by `ringmail send` (and `run`) at
// start-up; scrapes run on its own HTTP thread, never on a shard.
#pragma once

#include <cstdint>
#include <expected>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

#include <prometheus/collectable.h>

namespace prometheus {
class Exposer;
}

namespace ringmail::metrics {

inline constexpr std::string_view kDefaultListen = "127.0.0.1:9464";
inline constexpr std::string_view kMetricsPath = "/metrics";

// Checks "IPv4:PORT" (numeric, port 0-65535; 0 picks a free port). Host names are refused:
// the exposer binds before any resolver exists, and a name that resolves to a public
// address would expose metrics by surprise. IPv6 ("[::1]:PORT") is refused with a reason:
// Debian 12's civetweb is built without IPv6 and would fail with a cryptic error.
std::expected<void, std::string> validate_listen_address(std::string_view address);

class Exporter {
 public:
  // Binds `address` (see validate_listen_address) and starts the HTTP thread. /metrics
  // answers 404 until expose() is called. Errors say which address and why. With port 0
  // the port the kernel chose is written to `announce` (one line): nothing else would
  // tell the operator where to scrape.
  static std::expected<std::unique_ptr<Exporter>, std::string> start(
      const std::string& address, std::ostream& announce = std::cerr);
  ~Exporter();  // stops serving; a scrape in progress finishes first
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // Serves `collectable` at /metrics. The Exporter holds it (shared) until destruction,
  // so whatever its sampler reads must outlive the Exporter: declare the Exporter after
  // the Engine, so it is destroyed first.
  void expose(std::shared_ptr<prometheus::Collectable> collectable);

  // The port actually bound (useful with port 0).
  uint16_t port() const { return port_; }
  const std::string& address() const { return address_; }

 private:
  Exporter() = default;

  // Declared before the exposer, so the HTTP threads stop before it is released.
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
  uint16_t port_ = 0;
};

}  // namespace ringmail::metrics

// Where a recipient's domain is delivered: a route configured for that domain, else the
// relay when one is set, else the domain's own mail exchangers (MX, looked up by the
// shard that owns the domain).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "engine/seams.h"

namespace ringmail::engine {

// A relay destination whose address another thread replaces while the engine runs (a
// relay given by name, looked up again by app/relay_refresher.h). route() runs on the
// feeder thread and the refresher on its own: the mutex is held only for a copy.
class LiveDestination {
 public:
  explicit LiveDestination(Destination destination) : destination_(std::move(destination)) {}
  Destination get() const {
    std::lock_guard lock(mutex_);
    return destination_;
  }
  void set(Destination destination) {
    std::lock_guard lock(mutex_);
    destination_ = std::move(destination);
  }

 private:
  mutable std::mutex mutex_;
  Destination destination_;
};

// Where a relay or a route delivers: a fixed destination, or a live one when its address
// may change (`live` set; `fixed` unused then).
struct RouteTarget {
  RouteTarget(Destination destination) : fixed(std::move(destination)) {}  // NOLINT: implicit
  RouteTarget(std::shared_ptr<const LiveDestination> destination) : live(std::move(destination)) {}
  Destination get() const { return live ? live->get() : fixed; }

  Destination fixed;
  std::shared_ptr<const LiveDestination> live;
};

class DomainRouteResolver final : public RouteResolver {
 public:
  // `routes` maps lower-case domains to numeric destinations. `mx_port` is the SMTP port
  // towards exchangers (25; tests use another).
  DomainRouteResolver(std::optional<Destination> relay,
                      std::unordered_map<std::string, Destination> routes, uint16_t mx_port)
      : relay_(std::move(relay)), mx_port_(mx_port) {
    for (auto& [domain, destination] : routes) routes_.emplace(domain, std::move(destination));
  }

  // The same with targets, some of which may be live.
  struct Targets {
    std::optional<RouteTarget> relay;
    std::unordered_map<std::string, RouteTarget> routes;  // lower-case domain -> target
  };
  DomainRouteResolver(Targets targets, uint16_t mx_port)
      : relay_(std::move(targets.relay)), routes_(std::move(targets.routes)), mx_port_(mx_port) {}

  Destination route(std::string_view recipient_domain) override {
    std::string domain(recipient_domain);
    for (char& c : domain) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (auto it = routes_.find(domain); it != routes_.end()) return it->second.get();
    if (relay_) return relay_->get();
    Destination by_mx;
    by_mx.port = mx_port_;
    by_mx.mx_domain = std::move(domain);
    return by_mx;
  }

 private:
  std::optional<RouteTarget> relay_;
  std::unordered_map<std::string, RouteTarget> routes_;
  uint16_t mx_port_;
};

}  // namespace ringmail::engine

// Where a recipient's domain is delivered: a route configured for that domain, else the
// relay when one is set, else the domain's own mail exchangers (MX, looked up by the
// shard that owns the domain).
#pragma once

#include <optional>
#include <string>
#include <unordered_map>

#include "engine/seams.h"

namespace ringmail::engine {

class DomainRouteResolver final : public RouteResolver {
 public:
  // `routes` maps lower-case domains to numeric destinations. `mx_port` is the SMTP port
  // towards exchangers (25; tests use another).
  DomainRouteResolver(std::optional<Destination> relay,
                      std::unordered_map<std::string, Destination> routes, uint16_t mx_port)
      : relay_(std::move(relay)), routes_(std::move(routes)), mx_port_(mx_port) {}

  Destination route(std::string_view recipient_domain) override {
    std::string domain(recipient_domain);
    for (char& c : domain) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (auto it = routes_.find(domain); it != routes_.end()) return it->second;
    if (relay_) return *relay_;
    Destination by_mx;
    by_mx.port = mx_port_;
    by_mx.mx_domain = std::move(domain);
    return by_mx;
  }

 private:
  std::optional<Destination> relay_;
  std::unordered_map<std::string, Destination> routes_;
  uint16_t mx_port_;
};

}  // namespace ringmail::engine

#include "app/routing.h"

#include <fmt/format.h>

#include <optional>
#include <unordered_map>

#include "app/relay.h"
#include "engine/domain_route_resolver.h"

namespace ringmail::app {
namespace {

std::expected<engine::Destination, std::string> resolve(const std::string& text) {
  auto address = parse_relay(text);
  if (!address) return std::unexpected(address.error());
  return resolve_relay(*address);
}

}  // namespace

std::expected<std::unique_ptr<engine::RouteResolver>, std::string> make_route_resolver(
    Config& config) {
  std::optional<engine::Destination> relay;
  if (!config.relay.empty()) {
    auto resolved = resolve(config.relay);
    if (!resolved) return std::unexpected(resolved.error());
    if (!config.tls_server_name.empty()) resolved->tls_name = config.tls_server_name;
    relay = std::move(*resolved);
  }
  std::unordered_map<std::string, engine::Destination> routes;
  uint16_t shared_profile = 0;  // relay routes without security of their own, made once
  for (const auto& [domain, route] : config.routes) {
    engine::Destination destination;
    if (!route.relay.empty()) {
      auto resolved = resolve(route.relay);
      if (!resolved) return std::unexpected(fmt::format("route for {}: {}", domain, resolved.error()));
      destination = std::move(*resolved);
    } else {
      destination.port = config.mx_port;  // this domain's own MX, with its own TLS policy
      destination.mx_domain = domain;
    }
    // [auth] and implicit TLS belong to send.relay alone: a route, by MX or through a relay
    // of its own, is another server, which must never be offered that password.
    const engine::TransportSecurity& defaults = config.engine.security;
    if (route.has_own_security()) {
      // A profile of its own: the defaults without the relay's credentials and implicit
      // TLS, with what this route says instead.
      engine::TransportSecurity security = defaults;
      security.auth.reset();
      security.implicit_tls = false;
      if (route.tls) security.tls.mode = *route.tls;
      if (route.implicit) security.implicit_tls = *route.implicit;
      if (!route.auth.user.empty()) {
        auto credentials = credentials_of(route.auth, "routes." + domain);
        if (!credentials) return std::unexpected(credentials.error());
        security.auth = std::move(*credentials);
      }
      if (config.engine.route_security.size() >= 65535)
        return std::unexpected("more than 65,535 routes with security of their own");
      config.engine.route_security.push_back(std::move(security));
      destination.security_profile = uint16_t(config.engine.route_security.size());
    } else if (!route.relay.empty() && (defaults.auth || defaults.implicit_tls)) {
      // A relay route saying nothing of its own: one profile shared by all of them (one
      // TLS context per shard, not one per route), the defaults minus the relay's. An MX
      // route stays on the default profile: the shard strips those for MX already.
      if (shared_profile == 0) {
        engine::TransportSecurity security = defaults;
        security.auth.reset();
        security.implicit_tls = false;
        if (config.engine.route_security.size() >= 65535)
          return std::unexpected("more than 65,535 routes with security of their own");
        config.engine.route_security.push_back(std::move(security));
        shared_profile = uint16_t(config.engine.route_security.size());
      }
      destination.security_profile = shared_profile;
    }
    routes.emplace(domain, std::move(destination));
  }
  return std::make_unique<engine::DomainRouteResolver>(std::move(relay), std::move(routes),
                                                       config.mx_port);
}

}  // namespace ringmail::app

#include "app/routing.h"

#include <fmt/format.h>

#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

#include "app/relay.h"
#include "app/relay_refresher.h"
#include "engine/domain_route_resolver.h"

namespace ringmail::app {
namespace {

// Relays given by name: looked up once here (a failure is a start-up error), then again in
// the background by one refresher per name, whichever relay and routes share it.
class RelayNames {
 public:
  struct Resolved {
    engine::Destination destination;  // as at start-up
    std::string name;                 // the host name to look up again; empty when numeric
  };
  // `text` parsed and looked up; tls_name the override when given, else the name as
  // written (certificates name the relay, never its address).
  std::expected<Resolved, std::string> resolve(const std::string& text,
                                               const std::string& tls_name_override) {
    auto relay = parse_relay(text);
    if (!relay) return std::unexpected(relay.error());
    Resolved resolved;
    if (is_numeric_host(relay->host)) {
      auto destination = resolve_relay(*relay);
      if (!destination) return std::unexpected(destination.error());
      resolved.destination = std::move(*destination);
    } else {
      // One lookup per name, so every target of a name starts at the address its
      // refresher starts from.
      auto it = names_.find(relay->host);
      if (it == names_.end()) {
        auto address = lookup_relay_host(relay->host);
        if (!address) {
          return std::unexpected(
              fmt::format("cannot resolve relay host '{}': {}", relay->host, address.error()));
        }
        it = names_.emplace(relay->host, Name{std::move(*address), {}}).first;
      }
      resolved.destination = engine::Destination{it->second.address, relay->port, relay->host};
      resolved.name = relay->host;
    }
    if (!tls_name_override.empty()) resolved.destination.tls_name = tls_name_override;
    return resolved;
  }

  // What route() gives for it, once the caller has finished the destination (its profile):
  // fixed when numeric, live and kept current when a name.
  engine::RouteTarget target(Resolved resolved) {
    if (resolved.name.empty()) return engine::RouteTarget(std::move(resolved.destination));
    auto live = std::make_shared<engine::LiveDestination>(std::move(resolved.destination));
    names_.at(resolved.name).targets.push_back(live);
    return engine::RouteTarget(std::shared_ptr<const engine::LiveDestination>(std::move(live)));
  }

  // Starts the refreshers; none when every relay is numeric.
  std::vector<std::unique_ptr<RelayAddressRefresher>> start_refreshers() {
    std::vector<std::unique_ptr<RelayAddressRefresher>> refreshers;
    for (auto& [host, name] : names_) {
      RelayAddressRefresher::Options options;
      options.interval = relay_refresh_interval();
      refreshers.push_back(std::make_unique<RelayAddressRefresher>(
          host, name.address, std::move(name.targets), std::move(options)));
    }
    names_.clear();
    return refreshers;
  }

 private:
  struct Name {
    std::string address;  // numeric, from the start-up lookup
    std::vector<std::shared_ptr<engine::LiveDestination>> targets;
  };
  std::map<std::string, Name> names_;  // by host name as written
};

// The routes, plus the threads that keep their relay names' addresses current; stopping
// them is part of destroying the resolver, after the engine is gone.
class RefreshingRouteResolver final : public engine::RouteResolver {
 public:
  RefreshingRouteResolver(engine::DomainRouteResolver::Targets targets, uint16_t mx_port,
                          std::vector<std::unique_ptr<RelayAddressRefresher>> refreshers)
      : routes_(std::move(targets), mx_port), refreshers_(std::move(refreshers)) {}

  engine::Destination route(std::string_view recipient_domain) override {
    return routes_.route(recipient_domain);
  }

 private:
  engine::DomainRouteResolver routes_;
  std::vector<std::unique_ptr<RelayAddressRefresher>> refreshers_;
};

}  // namespace

std::expected<std::unique_ptr<engine::RouteResolver>, std::string> make_route_resolver(
    Config& config) {
  RelayNames names;
  engine::DomainRouteResolver::Targets targets;
  if (!config.relay.empty()) {
    auto resolved = names.resolve(config.relay, config.tls_server_name);
    if (!resolved) return std::unexpected(resolved.error());
    targets.relay = names.target(std::move(*resolved));
  }
  uint16_t shared_profile = 0;  // relay routes without security of their own, made once
  for (const auto& [domain, route] : config.routes) {
    RelayNames::Resolved resolved;
    engine::Destination& destination = resolved.destination;
    if (!route.relay.empty()) {
      auto by_relay = names.resolve(route.relay, "");
      if (!by_relay)
        return std::unexpected(fmt::format("route for {}: {}", domain, by_relay.error()));
      resolved = std::move(*by_relay);
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
    targets.routes.emplace(domain, names.target(std::move(resolved)));
  }
  auto refreshers = names.start_refreshers();
  if (refreshers.empty())
    return std::make_unique<engine::DomainRouteResolver>(std::move(targets), config.mx_port);
  return std::make_unique<RefreshingRouteResolver>(std::move(targets), config.mx_port,
                                                   std::move(refreshers));
}

}  // namespace ringmail::app

// Builds where each recipient goes from the config: per-domain [routes], else the relay,
// else the domain's MX. Relay and route host names are resolved here at start-up, then
// again every minute in the background for as long as the resolver lives.
#pragma once

#include <expected>
#include <memory>
#include <string>

#include "app/config.h"
#include "engine/seams.h"

namespace ringmail::app {

// Errors name the relay or route that could not be parsed or resolved (exit 2); a name
// that fails later keeps its last address (app/relay_refresher.h). Routes
// with security of their own become profiles in config.engine.route_security (so call it
// after resolve_credentials(), and before the engine is made).
std::expected<std::unique_ptr<engine::RouteResolver>, std::string> make_route_resolver(
    Config& config);

}  // namespace ringmail::app

// Builds where each recipient goes from the config: per-domain [routes], else the relay,
// else the domain's MX. Relay and route host names are resolved here, once, at start-up.
#pragma once

#include <expected>
#include <memory>
#include <string>

#include "app/config.h"
#include "engine/seams.h"

namespace ringmail::app {

// Errors name the relay or route that could not be parsed or resolved (exit 2).
std::expected<std::unique_ptr<engine::RouteResolver>, std::string> make_route_resolver(
    const Config& config);

}  // namespace ringmail::app

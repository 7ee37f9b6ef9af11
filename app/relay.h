// The relay every message goes to: parsed from "HOST:PORT" or "[v6]:PORT" and resolved once,
// at start-up, to a numeric address (getaddrinfo blocks, so never on an engine thread).
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

#include "engine/destination.h"

namespace ringmail::app {

struct RelayAddress {
  std::string host;  // a name, an IPv4 address or an IPv6 address (without brackets)
  uint16_t port = 25;
};

// "host:port", "1.2.3.4:port", "[::1]:port"; the port may be left out (25). An IPv6 address
// must be in brackets, since its colons would hide the port.
std::expected<RelayAddress, std::string> parse_relay(std::string_view text);

// Looks the host up with getaddrinfo and returns one address numerically, the first IPv4
// one when there is any. Blocking.
std::expected<engine::Destination, std::string> resolve_relay(const RelayAddress& relay);

}  // namespace ringmail::app

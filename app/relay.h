// The relay every message goes to: parsed from "HOST:PORT" or "[v6]:PORT" and resolved at
// start-up to a numeric address (getaddrinfo blocks, so never on an engine thread); a name
// is looked up again while ringmail runs by app/relay_refresher.h.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <vector>
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

// Every numeric address of `host` (NSS, so /etc/hosts and the like count), IPv4 ones first
// and otherwise in the resolver's order, each once; or getaddrinfo's words for why there
// is none. Blocking.
std::expected<std::vector<std::string>, std::string> lookup_relay_addresses(const std::string& host);

// The lookup behind resolve_relay(): the first of lookup_relay_addresses(). Blocking.
std::expected<std::string, std::string> lookup_relay_host(const std::string& host);

// True when `host` is a numeric IPv4 or IPv6 address: nothing to look up, now or later.
bool is_numeric_host(const std::string& host);

}  // namespace ringmail::app

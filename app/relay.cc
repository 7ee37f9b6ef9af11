#include "app/relay.h"

#include <fmt/format.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <memory>

namespace ringmail::app {
namespace {

std::expected<uint16_t, std::string> parse_port(std::string_view text, std::string_view relay) {
  unsigned port = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || port == 0 ||
      port > 65535) {
    return std::unexpected(
        fmt::format("invalid relay '{}': port must be a number from 1 to 65535", relay));
  }
  return static_cast<uint16_t>(port);
}

bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

}  // namespace

std::expected<RelayAddress, std::string> parse_relay(std::string_view text) {
  if (text.empty()) return std::unexpected("invalid relay '': expected HOST:PORT or [IPv6]:PORT");
  RelayAddress relay;
  std::string_view rest;
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return std::unexpected(fmt::format("invalid relay '{}': missing ']'", text));
    }
    relay.host = std::string(text.substr(1, close - 1));
    rest = text.substr(close + 1);
    if (relay.host.empty() ||
        relay.host.find_first_not_of("0123456789abcdefABCDEF:.%") != std::string::npos) {
      return std::unexpected(
          fmt::format("invalid relay '{}': brackets must hold an IPv6 address", text));
    }
    if (!rest.empty() && rest.front() != ':') {
      return std::unexpected(fmt::format("invalid relay '{}': expected ':PORT' after ']'", text));
    }
  } else {
    size_t colon = text.find(':');
    if (colon != std::string_view::npos && text.find(':', colon + 1) != std::string_view::npos) {
      return std::unexpected(
          fmt::format("invalid relay '{}': write an IPv6 address in brackets, [::1]:25", text));
    }
    relay.host = std::string(text.substr(0, colon));
    rest = colon == std::string_view::npos ? std::string_view() : text.substr(colon);
    if (relay.host.empty())
      return std::unexpected(fmt::format("invalid relay '{}': no host", text));
    for (char c : relay.host) {
      if (!is_host_char(c)) {
        return std::unexpected(
            fmt::format("invalid relay '{}': '{}' is not allowed in a host name", text, c));
      }
    }
  }
  if (!rest.empty()) {
    auto port = parse_port(rest.substr(1), text);
    if (!port) return std::unexpected(port.error());
    relay.port = *port;
  }
  return relay;
}

std::expected<std::vector<std::string>, std::string> lookup_relay_addresses(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0) return std::unexpected(std::string(gai_strerror(rc)));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(found, &freeaddrinfo);
  // IPv4 first: "localhost" commonly lists ::1 first while test sinks and many relays
  // listen on 127.0.0.1 only.
  std::vector<std::string> v4, v6;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char numeric[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, numeric, sizeof numeric, nullptr, 0,
                    NI_NUMERICHOST) != 0)
      continue;
    std::vector<std::string>& list = a->ai_family == AF_INET ? v4 : v6;
    if (std::find(list.begin(), list.end(), numeric) == list.end()) list.emplace_back(numeric);
  }
  v4.insert(v4.end(), v6.begin(), v6.end());
  if (v4.empty()) return std::unexpected(std::string("no usable address"));
  return v4;
}

std::expected<std::string, std::string> lookup_relay_host(const std::string& host) {
  auto all = lookup_relay_addresses(host);
  if (!all) return std::unexpected(all.error());
  return all->front();
}

bool is_numeric_host(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;  // never a lookup: fails at once for a name
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0) return false;
  freeaddrinfo(found);
  return true;
}

std::expected<engine::Destination, std::string> resolve_relay(const RelayAddress& relay) {
  auto numeric = lookup_relay_host(relay.host);
  if (!numeric) {
    return std::unexpected(
        fmt::format("cannot resolve relay host '{}': {}", relay.host, numeric.error()));
  }
  // The name as given is what a TLS certificate names (SNI and verification); a numeric
  // host is checked against the certificate's IP addresses instead.
  const bool given_as_name = relay.host != *numeric;
  return engine::Destination{*numeric, relay.port, given_as_name ? relay.host : std::string()};
}

}  // namespace ringmail::app

// Where a transaction goes: one SMTP server endpoint (today the relay; with MX routing,
// an exchanger set). Pools are keyed by it and it picks the shard.
#pragma once

#include <cstdint>
#include <string>

namespace ringmail::engine {

struct Destination {
  std::string host;  // numeric IPv4/IPv6 address or a name resolved at start-up
  uint16_t port = 25;
  // The name as configured, for TLS (SNI and the certificate check); `host` when empty.
  // Part of key() when it differs from `host`: two names served at one address are two
  // pools, so a connection verified for one name never carries the other's mail.
  std::string tls_name = {};
  // Non-empty: deliver to this domain's mail exchangers, found by the shard (MX lookup);
  // `host` is then unused and `port` is the SMTP port towards the exchangers.
  std::string mx_domain = {};
  // How connections are protected: 0 the engine's default TransportSecurity, n > 0 a
  // route's own profile (EngineOptions::route_security[n - 1]). An index, so credentials
  // never travel with the work. Part of key(): one host under two profiles, two pools.
  uint16_t security_profile = 0;

  // "host:port" ("[v6]:port" for IPv6), then " (tls_name)" when that differs from host;
  // the pool key and the shard hash input.
  std::string key() const;
  friend bool operator==(const Destination&, const Destination&) = default;
};

}  // namespace ringmail::engine

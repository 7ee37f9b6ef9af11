#include "engine/destination.h"

#include <cctype>

namespace ringmail::engine {

std::string Destination::key() const {
  std::string key;
  if (!mx_domain.empty()) key = "mx:" + mx_domain + ":" + std::to_string(port);
  else if (host.find(':') != std::string::npos) key = "[" + host + "]:" + std::to_string(port);
  else key = host + ":" + std::to_string(port);
  if (mx_domain.empty() && !tls_name.empty() && tls_name != host) {
    // Host names are case-insensitive: Relay.example and relay.example are one pool.
    std::string name = tls_name;
    for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
    key.append(" (").append(name).append(")");
  }
  if (security_profile != 0) key += "/s" + std::to_string(security_profile);
  return key;
}

}  // namespace ringmail::engine

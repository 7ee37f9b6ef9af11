#include "engine/destination.h"

namespace ringmail::engine {

std::string Destination::key() const {
  std::string key;
  if (!mx_domain.empty()) key = "mx:" + mx_domain + ":" + std::to_string(port);
  else if (host.find(':') != std::string::npos) key = "[" + host + "]:" + std::to_string(port);
  else key = host + ":" + std::to_string(port);
  if (mx_domain.empty() && !tls_name.empty() && tls_name != host) key += " (" + tls_name + ")";
  if (security_profile != 0) key += "/s" + std::to_string(security_profile);
  return key;
}

}  // namespace ringmail::engine

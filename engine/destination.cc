#include "engine/destination.h"

namespace ringmail::engine {

std::string Destination::key() const {
  std::string key;
  if (!mx_domain.empty()) key = "mx:" + mx_domain + ":" + std::to_string(port);
  else if (host.find(':') != std::string::npos) key = "[" + host + "]:" + std::to_string(port);
  else key = host + ":" + std::to_string(port);
  if (tls_mode) key += "/tls" + std::to_string(int(*tls_mode));
  return key;
}

}  // namespace ringmail::engine

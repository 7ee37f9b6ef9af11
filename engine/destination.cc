#include "engine/destination.h"

namespace ringmail::engine {

std::string Destination::key() const {
  if (!mx_domain.empty()) return "mx:" + mx_domain + ":" + std::to_string(port);
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

}  // namespace ringmail::engine

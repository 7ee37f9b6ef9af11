// Base64 (RFC 4648 §4, padded) for SASL responses on AUTH (RFC 4954 §4). Encoding only:
// the mechanisms ringmail speaks (PLAIN, LOGIN) never need a challenge decoded.
#pragma once

#include <string>
#include <string_view>

namespace ringmail::smtp {

std::string base64_encode(std::string_view bytes);

}  // namespace ringmail::smtp

// The one thing c-ares 1.18 does not hand us about an answer: the TTLs of its MX records
// (ares_parse_mx_reply drops them). A bounds-checked walk over the raw message.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace ringmail::dns {

// The smallest TTL of the answer-section records of type `type` and of CNAME records (an
// alias on the way shortens the life of the answer), in seconds; TTLs with the top bit set
// count as 0 (RFC 2181 §8). nullopt when the message is malformed or has no such record.
// Reads nothing outside `message`.
std::optional<uint32_t> min_answer_ttl(std::span<const unsigned char> message, uint16_t type);

}  // namespace ringmail::dns

#include "dns/dns_message.h"

#include <algorithm>
#include <cstddef>

namespace ringmail::dns {
namespace {

constexpr size_t kHeaderLength = 12;
constexpr uint16_t kTypeCname = 5;

uint16_t read16(std::span<const unsigned char> m, size_t at) {
  return static_cast<uint16_t>((m[at] << 8) | m[at + 1]);
}

uint32_t read32(std::span<const unsigned char> m, size_t at) {
  return (uint32_t{m[at]} << 24) | (uint32_t{m[at + 1]} << 16) | (uint32_t{m[at + 2]} << 8) |
         uint32_t{m[at + 3]};
}

// Moves `at` past the (possibly compressed) name there; false when it runs off the end or
// uses a reserved label type. A compression pointer ends the name in place, so there is
// nothing to follow and no loop to guard against.
bool skip_name(std::span<const unsigned char> m, size_t& at) {
  for (size_t labels = 0; labels <= 128; ++labels) {
    if (at >= m.size()) return false;
    const unsigned char length = m[at];
    if ((length & 0xc0) == 0xc0) {
      if (at + 2 > m.size()) return false;
      at += 2;
      return true;
    }
    if ((length & 0xc0) != 0) return false;
    at += 1 + length;
    if (length == 0) return at <= m.size();
  }
  return false;
}

}  // namespace

std::optional<uint32_t> min_answer_ttl(std::span<const unsigned char> message, uint16_t type) {
  if (message.size() < kHeaderLength) return std::nullopt;
  const uint16_t questions = read16(message, 4);
  const uint16_t answers = read16(message, 6);
  size_t at = kHeaderLength;
  for (uint16_t i = 0; i < questions; ++i) {
    if (!skip_name(message, at) || at + 4 > message.size()) return std::nullopt;
    at += 4;
  }
  std::optional<uint32_t> smallest;
  for (uint16_t i = 0; i < answers; ++i) {
    if (!skip_name(message, at) || at + 10 > message.size()) return std::nullopt;
    const uint16_t record_type = read16(message, at);
    uint32_t ttl = read32(message, at + 4);
    const uint16_t rdata_length = read16(message, at + 8);
    at += 10;
    if (at + rdata_length > message.size()) return std::nullopt;
    at += rdata_length;
    if (record_type != type && record_type != kTypeCname) continue;
    if (ttl & 0x80000000u) ttl = 0;
    smallest = smallest ? std::min(*smallest, ttl) : ttl;
  }
  return smallest;
}

}  // namespace ringmail::dns

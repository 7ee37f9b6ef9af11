#include "app/age.h"

#include <fmt/format.h>

#include <charconv>

namespace ringmail::app {

std::expected<int64_t, std::string> parse_age_ms(std::string_view text) {
  auto bad = [&] {
    return std::unexpected(fmt::format(
        "invalid age '{}': give a whole number and a unit, s m h or d (e.g. 30d)", text));
  };
  if (text.size() < 2) return bad();
  int64_t unit_ms = 0;
  switch (text.back()) {
    case 's':
      unit_ms = 1000;
      break;
    case 'm':
      unit_ms = 60'000;
      break;
    case 'h':
      unit_ms = 3'600'000;
      break;
    case 'd':
      unit_ms = 86'400'000;
      break;
    default:
      return bad();
  }
  const std::string_view digits = text.substr(0, text.size() - 1);
  int64_t count = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), count);
  if (ec != std::errc{} || end != digits.data() + digits.size() || count < 0) return bad();
  constexpr int64_t kMaxMs = int64_t{100} * 366 * 86'400'000;
  if (count > kMaxMs / unit_ms) return bad();
  return count * unit_ms;
}

}  // namespace ringmail::app

// Ages given on the command line (`purge --older-than 30d`): a whole number and a unit.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringmail::app {

// "90s", "30m", "12h", "30d" (a number of seconds, minutes, hours or days) in
// milliseconds. No unit, a fraction, a sign or a value past ~100 years is an error that
// quotes the text.
std::expected<int64_t, std::string> parse_age_ms(std::string_view text);

}  // namespace ringmail::app

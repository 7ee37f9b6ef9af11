// RFC 3339 date-times for `enqueue --send-at`: "2025-07-01T09:00:00Z",
// "2025-07-01 09:00:00.250+02:00". A zone (Z or an offset) is required, so a schedule
// never depends on the host's time zone.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringmail::app {

// Unix milliseconds, or why the text is not an RFC 3339 date-time.
std::expected<int64_t, std::string> parse_rfc3339_ms(std::string_view text);

// "2025-07-01T09:00:00Z" (UTC, seconds).
std::string format_rfc3339(int64_t unix_ms);

}  // namespace ringmail::app

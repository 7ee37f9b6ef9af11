// Numbers and durations as people read them in the progress line and the summary, and
// outside text made safe to print on a terminal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ringmail::app {

// 1234567 -> "1,234,567".
std::string group_thousands(uint64_t n);

// 0.42 -> "0.4s", 12.3 -> "12s", 185 -> "3m05s", 7380 -> "2h03m". Negative counts as 0.
std::string format_duration(double seconds);

// An age as the config and `purge --older-than` take it, in its largest whole unit:
// 2592000 -> "30d", 43200 -> "12h", 5400 -> "90m", 90 -> "90s".
std::string age_text(double seconds);

// (1, "attempt", "attempts") -> "1 attempt"; (1234, ...) -> "1,234 attempts".
std::string counted(uint64_t n, std::string_view one, std::string_view many);

// Text from outside (a server's reply, a name from the database) made safe for a
// terminal: control characters (C0, DEL, C1) and bytes that are not valid UTF-8 become
// \xNN, one per byte, so an ESC or BEL in a reply can neither move the cursor nor ring.
std::string printable(std::string_view text);

}  // namespace ringmail::app

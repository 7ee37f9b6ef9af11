// Numbers and durations as people read them in the progress line and the summary.
#pragma once

#include <cstdint>
#include <string>

namespace ringmail::app {

// 1234567 -> "1,234,567".
std::string group_thousands(uint64_t n);

// 0.42 -> "0.4s", 12.3 -> "12s", 185 -> "3m05s", 7380 -> "2h03m". Negative counts as 0.
std::string format_duration(double seconds);

}  // namespace ringmail::app

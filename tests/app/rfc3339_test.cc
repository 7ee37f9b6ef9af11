#include "app/rfc3339.h"

#include <gtest/gtest.h>

namespace ringmail::app {
namespace {

TEST(app_rfc3339, ParsesUtcOffsetsAndFractions) {
  EXPECT_EQ(*parse_rfc3339_ms("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(*parse_rfc3339_ms("2025-07-01T09:00:00Z"), 1751360400000);
  EXPECT_EQ(*parse_rfc3339_ms("2025-07-01T11:00:00+02:00"), 1751360400000);
  EXPECT_EQ(*parse_rfc3339_ms("2025-07-01 04:30:00.250-04:30"), 1751360400250);
  EXPECT_EQ(format_rfc3339(1751360400250), "2025-07-01T09:00:00Z");
}

TEST(app_rfc3339, RefusesWhatIsNotADateTimeWithAZone) {
  for (const char* bad : {"", "tomorrow", "2025-07-01", "2025-07-01T09:00:00",
                          "2025-02-30T00:00:00Z", "2025-07-01T25:00:00Z", "2025-07-01T09:00:00Zx",
                          "2025-07-01T09:00:00+2"}) {
    auto r = parse_rfc3339_ms(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_NE(r.error().find("RFC 3339"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace ringmail::app

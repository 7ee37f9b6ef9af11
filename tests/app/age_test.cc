// parse_age_ms: `purge --older-than` ages.
#include "app/age.h"

#include <gtest/gtest.h>

namespace ringmail::app {
namespace {

TEST(app_age, WholeNumbersWithAUnit) {
  EXPECT_EQ(parse_age_ms("0s"), 0);
  EXPECT_EQ(parse_age_ms("90s"), 90'000);
  EXPECT_EQ(parse_age_ms("30m"), 1'800'000);
  EXPECT_EQ(parse_age_ms("12h"), 43'200'000);
  EXPECT_EQ(parse_age_ms("30d"), int64_t{30} * 86'400'000);
}

TEST(app_age, AnythingElseQuotesTheText) {
  for (const char* bad : {"", "30", "d", "1.5d", "-1d", "+1d", "1w", "10 d", "99999999999d"}) {
    auto age = parse_age_ms(bad);
    ASSERT_FALSE(age) << bad;
    EXPECT_NE(age.error().find(std::string("'") + bad + "'"), std::string::npos) << age.error();
  }
}

}  // namespace
}  // namespace ringmail::app

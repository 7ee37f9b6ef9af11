#include "app/human_format.h"

#include <gtest/gtest.h>

namespace ringmail::app {
namespace {

TEST(app_human_format, GroupsThousands) {
  EXPECT_EQ(group_thousands(0), "0");
  EXPECT_EQ(group_thousands(999), "999");
  EXPECT_EQ(group_thousands(1000), "1,000");
  EXPECT_EQ(group_thousands(45000), "45,000");
  EXPECT_EQ(group_thousands(1234567), "1,234,567");
}

TEST(app_human_format, FormatsDurations) {
  EXPECT_EQ(format_duration(0.42), "0.4s");
  EXPECT_EQ(format_duration(-3), "0.0s");
  EXPECT_EQ(format_duration(1.44), "1s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(7380), "2h03m");
}

}  // namespace
}  // namespace ringmail::app

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

TEST(app_human_format, AgesInTheirLargestWholeUnit) {
  EXPECT_EQ(age_text(30 * 86400.0), "30d");
  EXPECT_EQ(age_text(12 * 3600.0), "12h");
  EXPECT_EQ(age_text(5400), "90m");
  EXPECT_EQ(age_text(90), "90s");
  EXPECT_EQ(age_text(0), "0s");
}

TEST(app_human_format, CountsWithTheRightNoun) {
  EXPECT_EQ(counted(0, "attempt", "attempts"), "0 attempts");
  EXPECT_EQ(counted(1, "attempt", "attempts"), "1 attempt");
  EXPECT_EQ(counted(2, "pass", "passes"), "2 passes");
  EXPECT_EQ(counted(12345, "recipient", "recipients"), "12,345 recipients");
}

TEST(app_human_format, PrintableKeepsTextAndUtf8) {
  EXPECT_EQ(printable(""), "");
  EXPECT_EQ(printable("451 4.3.0 Try again later, \\ [x]"), "451 4.3.0 Try again later, \\ [x]");
  const std::string utf8 = "r\xC3\xA9" "essayez \xE2\x82\xAC \xF0\x9F\x93\xAE";  // é, €, an emoji
  EXPECT_EQ(printable(utf8), utf8);
}

TEST(app_human_format, PrintableEscapesControlsAndInvalidUtf8) {
  EXPECT_EQ(printable("a\x1B[2Jb\x07" "c\x7F\r\n\t"), "a\\x1B[2Jb\\x07c\\x7F\\x0D\\x0A\\x09");
  EXPECT_EQ(printable(std::string_view("nul\0x", 5)), "nul\\x00x");
  EXPECT_EQ(printable("\xC2\x9B" "31m"), "\\xC2\\x9B31m");  // C1 CSI
  EXPECT_EQ(printable("\xFF\xFE"), "\\xFF\\xFE");
  EXPECT_EQ(printable("\xC3"), "\\xC3");                   // truncated sequence
  EXPECT_EQ(printable("\xC3(ok"), "\\xC3(ok");             // bad continuation, resync
  EXPECT_EQ(printable("\xC0\xAF"), "\\xC0\\xAF");           // overlong '/'
  EXPECT_EQ(printable("\xE0\x80\xAF"), "\\xE0\\x80\\xAF");   // overlong, 3 bytes
  EXPECT_EQ(printable("\xED\xA0\x80"), "\\xED\\xA0\\x80");   // a surrogate
  EXPECT_EQ(printable("\xF4\x90\x80\x80"), "\\xF4\\x90\\x80\\x80");  // above U+10FFFF
}

}  // namespace
}  // namespace ringmail::app

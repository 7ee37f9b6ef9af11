// encode_data_body: line endings and dot-stuffing on the inputs that trip encoders up.
#include "smtp/message_body.h"

#include <gtest/gtest.h>

namespace ringmail::smtp {
namespace {

TEST(MessageBodyTest, TrickyInputs) {
  struct Case {
    std::string_view in;
    std::string_view out;
  };
  const Case cases[] = {
      {"", ""},
      {"a", "a\r\n"},
      {"a\r\n", "a\r\n"},
      {"a\n", "a\r\n"},
      {"a\r", "a\r\n"},
      {"\n", "\r\n"},
      {"\r", "\r\n"},
      {"\r\n", "\r\n"},
      {"\n\r", "\r\n\r\n"},  // LF then a bare CR: two line endings
      {"\r\r\n", "\r\n\r\n"},
      {".", "..\r\n"},
      {"..", "...\r\n"},
      {".\r\n", "..\r\n"},
      {"\n.\n", "\r\n..\r\n"},
      {"\r.\r", "\r\n..\r\n"},
      {"a\r\n.\r\nb", "a\r\n..\r\nb\r\n"},
      {"a.b\n.c\n", "a.b\r\n..c\r\n"},
      {" .x\n", " .x\r\n"},
      {"l1\nl2\r\nl3\rl4", "l1\r\nl2\r\nl3\r\nl4\r\n"},
      {"\r\n.\r\n", "\r\n..\r\n"},
      {"x\n\n.", "x\r\n\r\n..\r\n"},
      {std::string_view("a\0b\n", 4), std::string_view("a\0b\r\n", 5)},
      {"caf\xc3\xa9\n", "caf\xc3\xa9\r\n"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(encode_data_body(c.in), c.out)
        << "input: " << testing::PrintToString(std::string(c.in));
  }
}

TEST(MessageBodyTest, NoLineOfTheResultIsALoneDot) {
  const std::string in = "one\n.\n..\r.\r\n.\nend";
  const std::string out = encode_data_body(in);
  EXPECT_EQ(out.find("\r\n.\r\n"), std::string::npos);
  EXPECT_FALSE(out.starts_with(".\r\n"));
  EXPECT_TRUE(out.ends_with("\r\n"));
  // Every CR is followed by LF and every LF preceded by CR.
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '\r') {
      EXPECT_EQ(out[i + 1], '\n');
    }
    if (out[i] == '\n') {
      EXPECT_EQ(out[i - 1], '\r');
    }
  }
}

TEST(MessageBodyTest, LargeBodyIsLinear) {
  std::string in;
  for (int i = 0; i < 100000; ++i) in += i % 7 == 0 ? ".dot line\n" : "plain line of text\n";
  const std::string out = encode_data_body(in);
  EXPECT_EQ(out.size(), in.size() + 100000 + (100000 + 6) / 7);
}

}  // namespace
}  // namespace ringmail::smtp

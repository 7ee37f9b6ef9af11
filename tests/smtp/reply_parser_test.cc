// ReplyParser: single and multi-line replies, enhanced codes, every way of splitting the
// input, and the limits that keep a hostile server from costing memory.
#include "smtp/reply_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ringmail::smtp {
namespace {

struct Parsed {
  std::vector<Reply> replies;
  bool error = false;
  std::string error_text;
};

bool same(const Reply& a, const Reply& b) {
  return a.code == b.code && a.enhanced == b.enhanced && a.text == b.text;
}

// Feeds `input` in chunks of `chunk` bytes (0: all at once), collecting every reply.
Parsed parse_all(std::string_view input, size_t chunk = 0, ReplyLimits limits = {}) {
  ReplyParser parser(limits);
  Parsed out;
  if (chunk == 0) chunk = input.size() == 0 ? 1 : input.size();
  for (size_t at = 0; at < input.size() && !out.error; at += chunk) {
    std::string_view piece = input.substr(at, chunk);
    while (!piece.empty()) {
      ReplyParseResult r = parser.parse(piece);
      EXPECT_LE(r.consumed, piece.size());
      piece.remove_prefix(r.consumed);
      if (r.status == ReplyParseStatus::kReply) {
        out.replies.push_back(std::move(r.reply));
      } else if (r.status == ReplyParseStatus::kError) {
        out.error = true;
        out.error_text = r.error;
        break;
      } else {
        EXPECT_TRUE(piece.empty());
      }
    }
  }
  return out;
}

TEST(ReplyParserTest, SingleLine) {
  Parsed p = parse_all("250 Ok\r\n");
  ASSERT_FALSE(p.error);
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0].code, 250);
  EXPECT_FALSE(p.replies[0].enhanced.present());
  EXPECT_EQ(p.replies[0].text, "Ok");
}

TEST(ReplyParserTest, MultiLineJoinsTextWithNewlines) {
  Parsed p = parse_all("250-mx.example.net\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
  ASSERT_FALSE(p.error);
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0].code, 250);
  EXPECT_EQ(p.replies[0].text, "mx.example.net\nPIPELINING\nSIZE 1000");
}

TEST(ReplyParserTest, CodeAloneIsAValidLastLine) {
  Parsed p = parse_all("354\r\n250-first\r\n250\r\n");
  ASSERT_FALSE(p.error);
  ASSERT_EQ(p.replies.size(), 2u);
  EXPECT_EQ(p.replies[0].code, 354);
  EXPECT_EQ(p.replies[0].text, "");
  EXPECT_EQ(p.replies[1].text, "first\n");
}

TEST(ReplyParserTest, EnhancedCodeParsedAndStrippedFromEveryLine) {
  Parsed p = parse_all("550-5.1.1 The account\r\n550 5.1.1 does not exist\r\n");
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0].enhanced, (EnhancedCode{5, 1, 1}));
  EXPECT_EQ(p.replies[0].text, "The account\ndoes not exist");
  EXPECT_EQ(p.replies[0].to_string(), "550 5.1.1 The account does not exist");
}

TEST(ReplyParserTest, EnhancedCodeRecordedFromTheFirstLine) {
  Parsed p = parse_all("450-4.2.0 busy\r\n450 4.7.1 later\r\n");
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0].enhanced, (EnhancedCode{4, 2, 0}));
  EXPECT_EQ(p.replies[0].text, "busy\nlater");
}

TEST(ReplyParserTest, EnhancedCodeVariants) {
  struct Case {
    std::string line;
    EnhancedCode code;
    std::string text;
  };
  const Case cases[] = {
      {"250 2.0.0", {2, 0, 0}, ""},
      {"250 2.0.0 Ok: queued", {2, 0, 0}, "Ok: queued"},
      {"452 4.3.123 full", {4, 3, 123}, "full"},
      {"554 5.999.9 x", {5, 999, 9}, "x"},
      {"250 2.1000.0 too many digits", {}, "2.1000.0 too many digits"},
      {"250 5.1.1 class differs from the code", {}, "5.1.1 class differs from the code"},
      {"550 3.1.1 bad class", {}, "3.1.1 bad class"},
      {"250 2.0.0x", {}, "2.0.0x"},
      {"250 2.0 short", {}, "2.0 short"},
      {"250 2..0 empty", {}, "2..0 empty"},
  };
  for (const Case& c : cases) {
    Parsed p = parse_all(c.line + "\r\n");
    ASSERT_EQ(p.replies.size(), 1u) << c.line;
    EXPECT_EQ(p.replies[0].enhanced, c.code) << c.line;
    EXPECT_EQ(p.replies[0].text, c.text) << c.line;
  }
}

TEST(ReplyParserTest, ParseEnhancedCodeReportsBytesTaken) {
  EnhancedCode code;
  EXPECT_EQ(parse_enhanced_code("5.7.1 denied", code), 6u);
  EXPECT_EQ(code, (EnhancedCode{5, 7, 1}));
  EXPECT_EQ(code.to_string(), "5.7.1");
  EXPECT_EQ(parse_enhanced_code("4.4.2", code), 5u);
  EXPECT_EQ(parse_enhanced_code("1.2.3 x", code), std::nullopt);
  EXPECT_EQ(parse_enhanced_code("", code), std::nullopt);
  EXPECT_EQ(EnhancedCode{}.to_string(), "");
}

TEST(ReplyParserTest, BareLfAcceptedAsLineEnd) {
  Parsed p = parse_all("250-a\n250 b\n");
  ASSERT_FALSE(p.error);
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0].text, "a\nb");
}

TEST(ReplyParserTest, BareCrIsNotALineEnd) {
  Parsed p = parse_all("250 a\rb\r\n");
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0].text, "a\rb");
}

const char kStream[] =
    "220 mx.example.net ESMTP\r\n"
    "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"
    "250 2.1.0 Ok\r\n250 2.1.5 Ok\n354 End data with <CR><LF>.<CR><LF>\r\n"
    "550-5.1.1 <x@example.net>: Recipient address rejected:\r\n550 5.1.1 unknown\r\n"
    "250 2.0.0 Ok: queued as 4XyZ\r\n221 2.0.0 Bye\r\n";

TEST(ReplyParserTest, EverySplitGivesTheSameReplies) {
  const std::string input = kStream;
  Parsed whole = parse_all(input);
  ASSERT_FALSE(whole.error);
  ASSERT_EQ(whole.replies.size(), 8u);
  Parsed bytewise = parse_all(input, 1);
  ASSERT_EQ(bytewise.replies.size(), whole.replies.size());
  for (size_t i = 0; i < whole.replies.size(); ++i)
    EXPECT_TRUE(same(whole.replies[i], bytewise.replies[i])) << i;
  for (size_t split = 1; split < input.size(); ++split) {
    ReplyParser parser;
    std::vector<Reply> got;
    for (std::string_view piece :
         {std::string_view(input).substr(0, split), std::string_view(input).substr(split)}) {
      while (!piece.empty()) {
        ReplyParseResult r = parser.parse(piece);
        ASSERT_NE(r.status, ReplyParseStatus::kError) << split;
        piece.remove_prefix(r.consumed);
        if (r.status == ReplyParseStatus::kReply) got.push_back(std::move(r.reply));
      }
    }
    ASSERT_EQ(got.size(), whole.replies.size()) << split;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(same(got[i], whole.replies[i])) << split;
    EXPECT_FALSE(parser.in_reply());
  }
}

TEST(ReplyParserTest, InReplyWhileIncomplete) {
  ReplyParser parser;
  EXPECT_FALSE(parser.in_reply());
  EXPECT_EQ(parser.parse("25").status, ReplyParseStatus::kNeedMore);
  EXPECT_TRUE(parser.in_reply());
  EXPECT_EQ(parser.parse("0-a\r\n").status, ReplyParseStatus::kNeedMore);
  EXPECT_TRUE(parser.in_reply());
  ReplyParseResult r = parser.parse("250 b\r\n250 c\r\n");
  EXPECT_EQ(r.status, ReplyParseStatus::kReply);
  EXPECT_EQ(r.consumed, 7u);  // stops after the first complete reply
  EXPECT_FALSE(parser.in_reply());
}

TEST(ReplyParserTest, OversizedLineIsAnErrorAtOnce) {
  ReplyLimits limits;
  limits.max_line_bytes = 16;
  // 14 bytes of text + CRLF = 16: fits exactly.
  EXPECT_FALSE(parse_all("250 0123456789\r\n", 0, limits).error);
  Parsed p = parse_all("250 01234567890\r\n", 0, limits);
  EXPECT_TRUE(p.error);
  EXPECT_EQ(p.error_text, "reply line longer than 16 bytes");
  // Without a line end the parser refuses as soon as the line cannot fit, holding at most
  // max_line_bytes - 1 bytes.
  ReplyParser parser(limits);
  EXPECT_EQ(parser.parse("250 0123456789\r").status, ReplyParseStatus::kNeedMore);
  EXPECT_EQ(parser.parse("x").status, ReplyParseStatus::kError);
  // Byte-at-a-time gives the same verdict.
  EXPECT_TRUE(parse_all("250 01234567890\r\n", 1, limits).error);
  EXPECT_TRUE(parse_all(std::string(1 << 20, 'a'), 4096).error);
}

TEST(ReplyParserTest, OversizedReplyIsAnError) {
  ReplyLimits limits;
  limits.max_reply_bytes = 40;
  EXPECT_FALSE(parse_all("250-0123456789\r\n250-0123456789\r\n250 \r\n", 0, limits).error);
  Parsed p = parse_all("250-0123456789\r\n250-0123456789\r\n250 0123\r\n", 0, limits);
  EXPECT_TRUE(p.error);
  EXPECT_EQ(p.error_text, "reply longer than 40 bytes");
  // The limit is per reply: many small replies are fine.
  std::string many;
  for (int i = 0; i < 100; ++i) many += "250 0123456789\r\n";
  Parsed ok = parse_all(many, 0, limits);
  EXPECT_FALSE(ok.error);
  EXPECT_EQ(ok.replies.size(), 100u);
}

TEST(ReplyParserTest, TooManyLinesIsAnError) {
  ReplyLimits limits;
  limits.max_reply_lines = 3;
  EXPECT_FALSE(parse_all("250-a\r\n250-b\r\n250 c\r\n", 0, limits).error);
  Parsed p = parse_all("250-a\r\n250-b\r\n250-c\r\n250 d\r\n", 1, limits);
  EXPECT_TRUE(p.error);
  EXPECT_EQ(p.error_text, "reply of more than 3 lines");
}

TEST(ReplyParserTest, MalformedLines) {
  const char* bad[] = {
      "hello\r\n", "25\r\n", "2500 x\r\n", "250x\r\n",   "199 x\r\n", "600 x\r\n",
      "2a0 x\r\n", "\r\n",   "\n",         " 250 x\r\n", "250_x\r\n",
  };
  for (const char* line : bad) {
    Parsed p = parse_all(line);
    EXPECT_TRUE(p.error) << line;
    EXPECT_TRUE(p.replies.empty()) << line;
    EXPECT_TRUE(p.error_text.starts_with("malformed reply line")) << p.error_text;
  }
}

TEST(ReplyParserTest, MismatchedContinuationCode) {
  Parsed p = parse_all("250-a\r\n251 b\r\n");
  EXPECT_TRUE(p.error);
  EXPECT_TRUE(p.replies.empty());
  EXPECT_EQ(p.error_text, "reply line \"251 b\" continues a 250 reply");
}

TEST(ReplyParserTest, StaysInErrorUntilReset) {
  ReplyParser parser;
  EXPECT_EQ(parser.parse("garbage\r\n").status, ReplyParseStatus::kError);
  EXPECT_EQ(parser.parse("250 ok\r\n").status, ReplyParseStatus::kError);
  parser.reset();
  EXPECT_EQ(parser.parse("250 ok\r\n").status, ReplyParseStatus::kReply);
}

TEST(ReplyParserTest, ErrorTextEscapesControlBytes) {
  Parsed p = parse_all(std::string("\x01\xff\"z\r\n", 6));
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.error_text, "malformed reply line \"\\x01\\xff\\x22z\"");
}

}  // namespace
}  // namespace ringmail::smtp

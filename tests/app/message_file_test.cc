#include "app/message_file.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>

#include <string>
#include <string_view>

#include "tests/app/temp_dir.h"

namespace ringmail::app {
namespace {

using testing::TempDir;

const HeaderFieldDefaults kDefaults{"Tue, 01 Jul 2025 12:34:56 +0000", "<id@mail.example>"};

TEST(app_message_file, AddsDateAndMessageIdAtTheEndOfAnLfHeader) {
  auto out = add_missing_header_fields("Subject: hi\nFrom: a@b.c\n\nBody\nDate: not a header\n",
                                       kDefaults);
  ASSERT_TRUE(out) << out.error().reason;
  EXPECT_EQ(*out,
            "Subject: hi\nFrom: a@b.c\n"
            "Date: Tue, 01 Jul 2025 12:34:56 +0000\n"
            "Message-ID: <id@mail.example>\n"
            "\nBody\nDate: not a header\n");
}

TEST(app_message_file, KeepsCrLfLineEndings) {
  auto out = add_missing_header_fields("Subject: hi\r\n\r\nBody\r\n", kDefaults);
  ASSERT_TRUE(out) << out.error().reason;
  EXPECT_EQ(*out,
            "Subject: hi\r\n"
            "Date: Tue, 01 Jul 2025 12:34:56 +0000\r\n"
            "Message-ID: <id@mail.example>\r\n"
            "\r\nBody\r\n");
}

TEST(app_message_file, LeavesPresentFieldsAloneWhateverTheirCase) {
  const std::string message = "date: Mon, 30 Jun 2025 10:00:00 +0200\nMESSAGE-ID: <x@y>\n\nB\n";
  EXPECT_EQ(add_missing_header_fields(message, kDefaults), message);
}

TEST(app_message_file, AddsOnlyWhatIsMissing) {
  auto out = add_missing_header_fields(
      "Date : Mon, 30 Jun 2025 10:00:00 +0200\n"
      "Subject: folded\n  continuation\n\nB\n",
      kDefaults);
  ASSERT_TRUE(out) << out.error().reason;
  EXPECT_EQ(*out,
            "Date : Mon, 30 Jun 2025 10:00:00 +0200\n"
            "Subject: folded\n  continuation\n"
            "Message-ID: <id@mail.example>\n"
            "\nB\n");
}

TEST(app_message_file, HeaderOnlyMessageWithoutFinalNewline) {
  auto out = add_missing_header_fields("Subject: no body", kDefaults);
  ASSERT_TRUE(out) << out.error().reason;
  EXPECT_EQ(*out,
            "Subject: no body\n"
            "Date: Tue, 01 Jul 2025 12:34:56 +0000\n"
            "Message-ID: <id@mail.example>\n");
}

TEST(app_message_file, RefusesWhatIsNotAMessage) {
  auto problem = [](std::string_view message) {
    auto out = add_missing_header_fields(message, kDefaults);
    return out ? std::string("accepted") : out.error().to_string("m.eml");
  };
  EXPECT_EQ(problem(""), "m.eml: the message is empty");
  EXPECT_EQ(problem("\nbody only\n"), "m.eml: the message has no header fields");
  const std::string not_a_field =
      ": not a header field ('Name: value'); the header ends at the first empty line";
  EXPECT_EQ(problem("Hello world\n\nbody\n"), "m.eml:1" + not_a_field);
  EXPECT_EQ(problem("Subject: x\nno colon here\n\nbody\n"), "m.eml:2" + not_a_field);
  EXPECT_EQ(problem(": empty name\n\nb\n"), "m.eml:1" + not_a_field);
  EXPECT_EQ(problem(" folded: first\n\nb\n"),
            "m.eml:1: the header starts with a continuation line, not a field");
}

TEST(app_message_file, ChecksLineLengthAndNulBytes) {
  EXPECT_TRUE(check_message_lines("Subject: x\r\n\r\n" + std::string(998, 'a') + "\r\n"));
  EXPECT_TRUE(check_message_lines(std::string(998, 'a')));  // no final line ending
  // LF, CRLF and a bare CR each end a line, as the DATA encoder reads them.
  EXPECT_TRUE(check_message_lines(std::string(998, 'a') + "\r" + std::string(998, 'b')));

  auto long_line = check_message_lines("Subject: x\n\nok\n" + std::string(1500, 'a') + "\nok\n");
  ASSERT_FALSE(long_line);
  EXPECT_EQ(long_line.error().to_string("m.eml"), "m.eml:4: line longer than 998 octets (1500)");
  auto at_end = check_message_lines("S: x\r\n\r\n" + std::string(999, 'a'));
  ASSERT_FALSE(at_end);
  EXPECT_EQ(at_end.error().to_string("m.eml"), "m.eml:3: line longer than 998 octets (999)");

  auto nul = check_message_lines(std::string("Subject: x\n\nbody\nte\0xt\n", 23));
  ASSERT_FALSE(nul);
  EXPECT_EQ(nul.error().to_string("m.eml"), "m.eml:4: NUL byte");
}

TEST(app_message_file, FormatsRfc5322DatesInUtc) {
  auto when = std::chrono::system_clock::from_time_t(1751373296);
  EXPECT_EQ(format_rfc5322_date(when), "Tue, 01 Jul 2025 12:34:56 +0000");
  EXPECT_EQ(format_rfc5322_date(std::chrono::system_clock::from_time_t(0)),
            "Thu, 01 Jan 1970 00:00:00 +0000");
}

TEST(app_message_file, MessageIdsAreUniqueAndWellFormed) {
  const std::string a = make_message_id("mail.example");
  // "<" 32 hex digits "." digits "@mail.example>" (checked by hand: GCC 12's std::regex
  // trips -Wmaybe-uninitialized at -O2, which -Werror turns into a build failure).
  const std::string suffix = "@mail.example>";
  ASSERT_GT(a.size(), 1 + 32 + 2 + suffix.size()) << a;
  EXPECT_EQ(a.front(), '<') << a;
  EXPECT_TRUE(std::all_of(a.begin() + 1, a.begin() + 33, [](char c) {
    return std::isxdigit(c) && !std::isupper(c);
  })) << a;
  EXPECT_EQ(a[33], '.') << a;
  const size_t at = a.find('@');
  ASSERT_NE(at, std::string::npos);
  EXPECT_GT(at, 34u);
  EXPECT_TRUE(std::all_of(a.begin() + 34, a.begin() + at, [](char c) { return std::isdigit(c); }))
      << a;
  EXPECT_EQ(a.substr(at), suffix) << a;
  EXPECT_NE(a, make_message_id("mail.example"));
}

TEST(app_message_file, LoadsCompletesAndEncodesOnce) {
  TempDir dir;
  auto path = dir.write("m.eml", "Subject: hi\nFrom: a@b.c\n\n.hidden line\nbye\n");
  auto body = load_message_file(path, "mail.example");
  ASSERT_TRUE(body) << body.error();
  const std::string& text = **body;
  EXPECT_TRUE(text.starts_with("Subject: hi\r\nFrom: a@b.c\r\nDate: ")) << text;
  EXPECT_NE(text.find("\r\nMessage-ID: <"), std::string::npos);
  EXPECT_NE(text.find("@mail.example>\r\n\r\n..hidden line\r\nbye\r\n"), std::string::npos) << text;
}

TEST(app_message_file, ErrorsNameTheFile) {
  TempDir dir;
  auto missing = load_message_file(dir.path("none.eml"), "x");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(),
            "cannot read message file '" + dir.path("none.eml") + "': No such file or directory");
  auto empty = load_message_file(dir.write("empty.eml", ""), "x");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error(), dir.path("empty.eml") + ": the message is empty");
  auto field = load_message_file(dir.write("field.eml", "Subject: x\nnot a field\n\nb\n"), "x");
  ASSERT_FALSE(field);
  EXPECT_EQ(field.error(), dir.path("field.eml") +
                               ":2: not a header field ('Name: value'); the header ends at the "
                               "first empty line");
}

TEST(app_message_file, RefusesLongLinesAndNulBytesNamingFileAndLine) {
  TempDir dir;
  auto long_line = load_message_file(
      dir.write("long.eml", "Subject: x\r\n\r\n" + std::string(1500, 'a') + "\r\n"), "x");
  ASSERT_FALSE(long_line);
  EXPECT_EQ(long_line.error(), dir.path("long.eml") + ":3: line longer than 998 octets (1500)");
  auto long_header = load_message_file(
      dir.write("header.eml", "Subject: " + std::string(990, 'h') + "\n\nb\n"), "x");
  ASSERT_FALSE(long_header);
  EXPECT_EQ(long_header.error(), dir.path("header.eml") + ":1: line longer than 998 octets (999)");
  auto nul = load_message_file(dir.write("nul.eml", std::string("Subject: \0\n\nb\n", 15)), "x");
  ASSERT_FALSE(nul);
  EXPECT_EQ(nul.error(), dir.path("nul.eml") + ":1: NUL byte");
}

TEST(app_message_file, SkipsALeadingByteOrderMark) {
  TempDir dir;
  auto body =
      load_message_file(dir.write("bom.eml", "\xEF\xBB\xBFSubject: hi\n\nbody\n"), "mail.example");
  ASSERT_TRUE(body) << body.error();
  EXPECT_TRUE((*body)->starts_with("Subject: hi\r\nDate: ")) << **body;
  // Only at the start: elsewhere the bytes are content, sent as they are.
  auto inner = load_message_file(dir.write("inner.eml", "Subject: \xEF\xBB\xBFhi\n\nbody\n"),
                                 "mail.example");
  ASSERT_TRUE(inner) << inner.error();
  EXPECT_TRUE((*inner)->starts_with("Subject: \xEF\xBB\xBFhi\r\n")) << **inner;
}

}  // namespace
}  // namespace ringmail::app

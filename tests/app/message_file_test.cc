#include "app/message_file.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>

#include <string>

#include "tests/app/temp_dir.h"

namespace ringmail::app {
namespace {

using testing::TempDir;

const HeaderFieldDefaults kDefaults{"Tue, 01 Jul 2025 12:34:56 +0000", "<id@mail.example>"};

TEST(app_message_file, AddsDateAndMessageIdAtTheEndOfAnLfHeader) {
  auto out = add_missing_header_fields("Subject: hi\nFrom: a@b.c\n\nBody\nDate: not a header\n",
                                       kDefaults);
  ASSERT_TRUE(out) << out.error();
  EXPECT_EQ(*out,
            "Subject: hi\nFrom: a@b.c\n"
            "Date: Tue, 01 Jul 2025 12:34:56 +0000\n"
            "Message-ID: <id@mail.example>\n"
            "\nBody\nDate: not a header\n");
}

TEST(app_message_file, KeepsCrLfLineEndings) {
  auto out = add_missing_header_fields("Subject: hi\r\n\r\nBody\r\n", kDefaults);
  ASSERT_TRUE(out) << out.error();
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
  ASSERT_TRUE(out) << out.error();
  EXPECT_EQ(*out,
            "Date : Mon, 30 Jun 2025 10:00:00 +0200\n"
            "Subject: folded\n  continuation\n"
            "Message-ID: <id@mail.example>\n"
            "\nB\n");
}

TEST(app_message_file, HeaderOnlyMessageWithoutFinalNewline) {
  auto out = add_missing_header_fields("Subject: no body", kDefaults);
  ASSERT_TRUE(out) << out.error();
  EXPECT_EQ(*out,
            "Subject: no body\n"
            "Date: Tue, 01 Jul 2025 12:34:56 +0000\n"
            "Message-ID: <id@mail.example>\n");
}

TEST(app_message_file, RefusesWhatIsNotAMessage) {
  EXPECT_EQ(add_missing_header_fields("", kDefaults).error(), "the message is empty");
  EXPECT_EQ(add_missing_header_fields("\nbody only\n", kDefaults).error(),
            "the message has no header fields");
  EXPECT_EQ(add_missing_header_fields("Hello world\n\nbody\n", kDefaults).error(),
            "line 1 of the header is not a header field ('Name: value'); the header ends at "
            "the first empty line");
  EXPECT_EQ(add_missing_header_fields("Subject: x\nno colon here\n\nbody\n", kDefaults).error(),
            "line 2 of the header is not a header field ('Name: value'); the header ends at "
            "the first empty line");
  EXPECT_EQ(add_missing_header_fields(": empty name\n\nb\n", kDefaults).error(),
            "line 1 of the header is not a header field ('Name: value'); the header ends at "
            "the first empty line");
  EXPECT_EQ(add_missing_header_fields(" folded: first\n\nb\n", kDefaults).error(),
            "line 1 of the header is a continuation line, not a field");
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
  EXPECT_TRUE(std::all_of(a.begin() + 1, a.begin() + 33, [](char c) { return std::isxdigit(c) && !std::isupper(c); })) << a;
  EXPECT_EQ(a[33], '.') << a;
  const size_t at = a.find('@');
  ASSERT_NE(at, std::string::npos);
  EXPECT_GT(at, 34u);
  EXPECT_TRUE(std::all_of(a.begin() + 34, a.begin() + at, [](char c) { return std::isdigit(c); })) << a;
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
  EXPECT_EQ(empty.error(), "message file '" + dir.path("empty.eml") + "': the message is empty");
}

}  // namespace
}  // namespace ringmail::app

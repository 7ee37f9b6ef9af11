#include "app/recipients_file.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "tests/app/temp_dir.h"

namespace ringmail::app {
namespace {

using testing::TempDir;

// Everything a file yields, in order: "ok LINE address domain" or the refusal's text.
std::vector<std::string> read_all(RecipientsFile& file) {
  std::vector<std::string> out;
  while (auto record = file.next()) {
    if (*record) {
      out.push_back("ok " + std::to_string((*record)->line) + " " + (*record)->address + " " +
                    (*record)->domain);
    } else {
      out.push_back(record->error().to_string());
    }
  }
  return out;
}

std::vector<std::string> read_all(const std::string& path) {
  auto file = RecipientsFile::open(path);
  EXPECT_TRUE(file) << file.error();
  if (!file) return {};
  return read_all(*file);
}

TEST(app_recipients_file, TextSkipsBlankAndCommentLinesAndReportsBadOnes) {
  TempDir dir;
  auto path = dir.write("list.txt",
                        "# campaign 7\n"
                        "\n"
                        "alice@example.com\n"
                        "  bob@Example.COM  \n"
                        "not-an-address\n"
                        "   # indented comment\n"
                        "carol@x.org");  // no final newline
  EXPECT_EQ(read_all(path), (std::vector<std::string>{
                                "ok 3 alice@example.com example.com",
                                "ok 4 bob@Example.COM example.com",
                                path + ":5: missing '@'",
                                "ok 7 carol@x.org x.org",
                            }));
}

TEST(app_recipients_file, TextWithCrLfLineEndings) {
  TempDir dir;
  auto path = dir.write("list.txt", "a@b.example\r\n\r\nc@d.example\r\n");
  EXPECT_EQ(read_all(path),
            (std::vector<std::string>{"ok 1 a@b.example b.example", "ok 3 c@d.example d.example"}));
}

TEST(app_recipients_file, TextRefusesInjectionAttempts) {
  TempDir dir;
  auto path = dir.write("list.txt",
                        "a@b.c>\r\nRCPT TO:<x@y>\r\n"
                        "a@b.c\rRCPT TO:<x@y>\n"
                        "a@b.c> NOTIFY=NEVER\n" +
                            std::string("a@b.c\0x\n", 8) + "ok@b.c\n");
  EXPECT_EQ(read_all(path), (std::vector<std::string>{
                                path + ":1: '>' in address",
                                path + ":2: space in address",
                                path + ":3: carriage return in address",
                                path + ":4: '>' in address",
                                path + ":5: control character 0x00 in address",
                                "ok 6 ok@b.c b.c",
                            }));
}

TEST(app_recipients_file, CsvHandlesQuotesEscapesCrLfAndMultiLineFields) {
  TempDir dir;
  auto path = dir.write("people.csv",
                        "name,Email,note\r\n"
                        "\"Smith, John\",john@example.com,\"said \"\"hi\"\"\"\r\n"
                        "Jane, \"jane@example.com\" ,x\r\n"
                        "Bad,,x\r\n"
                        "Short\r\n"
                        "\"Multi\r\nline, name\",multi@example.com,y\r\n"
                        "\r\n"
                        "\"Quote\"x,after@example.com\r\n"
                        "Last,last@example.com\r\n");
  EXPECT_EQ(read_all(path), (std::vector<std::string>{
                                "ok 2 john@example.com example.com",
                                "ok 3 jane@example.com example.com",
                                path + ":4: empty address",
                                path + ":5: row has 1 fields; 'email' is field 2",
                                "ok 6 multi@example.com example.com",
                                path + ":9: text after a closing quote",
                                "ok 10 last@example.com example.com",
                            }));
}

TEST(app_recipients_file, CsvQuotedFieldCannotSmuggleALineBreakIntoAnAddress) {
  TempDir dir;
  auto path = dir.write("people.csv",
                        "email\n"
                        "\"a@b.c>\r\nRCPT TO:<x@y>\"\n"
                        "\"a@b.c\nDATA\"\n"
                        "ok@b.c\n");
  EXPECT_EQ(read_all(path), (std::vector<std::string>{
                                path + ":2: line feed in address",
                                path + ":4: line feed in address",
                                "ok 6 ok@b.c b.c",
                            }));
}

TEST(app_recipients_file, CsvHeaderWithByteOrderMark) {
  TempDir dir;
  auto path = dir.write("excel.csv",
                        "\xEF\xBB\xBF"
                        "Email;x\n");
  // A semicolon-separated header is one field named "Email;x": no email column.
  EXPECT_FALSE(RecipientsFile::open(path));
  path = dir.write("excel2.csv",
                   "\xEF\xBB\xBF"
                   "Email,Name\nx@y.z,X\n");
  EXPECT_EQ(read_all(path), (std::vector<std::string>{"ok 2 x@y.z y.z"}));
}

TEST(app_recipients_file, CsvWithoutEmailColumnIsAnError) {
  TempDir dir;
  auto path = dir.write("people.csv", "\nname,address\nfoo,bar@example.com\n");
  auto file = RecipientsFile::open(path);
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error(), path + ":2: CSV header has no 'email' column (header: name,address)");
}

TEST(app_recipients_file, CsvWithoutHeaderIsAnError) {
  TempDir dir;
  auto path = dir.write("empty.csv", "\n\n");
  auto file = RecipientsFile::open(path);
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error(), path + ": CSV file has no header row (one with an 'email' column)");
}

TEST(app_recipients_file, CsvUnterminatedQuoteAtEndOfFile) {
  TempDir dir;
  auto path = dir.write("people.csv", "email\na@b.c\n\"open@b.c\nnext@b.c\n");
  EXPECT_EQ(read_all(path), (std::vector<std::string>{
                                "ok 2 a@b.c b.c",
                                path + ":3: unterminated quoted field at the end of the file",
                            }));
}

TEST(app_recipients_file, CsvStrayQuoteSkipsABoundedNumberOfLines) {
  TempDir dir;
  std::string content = "email\n\"stray@b.c\n";
  for (int i = 0; i < 150; ++i) content += "r" + std::to_string(i) + "@b.c\n";
  auto path = dir.write("people.csv", content);
  auto out = read_all(path);
  ASSERT_EQ(out.size(), 1u + (150 - 99));
  EXPECT_EQ(out[0], path + ":2: unterminated quoted field; lines 2-101 skipped");
  EXPECT_EQ(out[1], "ok 102 r99@b.c b.c");
}

TEST(app_recipients_file, JsonLines) {
  TempDir dir;
  auto path = dir.write("list.jsonl",
                        "{\"email\":\"a@b.c\",\"name\":\"A\"}\n"
                        "\n"
                        "not json\n"
                        "[1,2]\n"
                        "{\"name\":\"x\"}\n"
                        "{\"email\":42}\r\n"
                        "{\"email\":\"a@b.c>\\r\\nRCPT TO:<x@y>\"}\n"
                        "{\"email\":\"X@B.C\"}");
  EXPECT_EQ(read_all(path), (std::vector<std::string>{
                                "ok 1 a@b.c b.c",
                                path + ":3: invalid JSON",
                                path + ":4: not a JSON object",
                                path + ":5: no \"email\" field",
                                path + ":6: \"email\" is not a string",
                                path + ":7: carriage return in address",
                                "ok 8 X@B.C b.c",
                            }));
}

TEST(app_recipients_file, NdjsonExtension) {
  TempDir dir;
  auto file = RecipientsFile::open(dir.write("x.NDJSON", "{\"email\":\"a@b.c\"}\n"));
  ASSERT_TRUE(file);
  EXPECT_EQ(file->format(), RecipientsFormat::kJsonLines);
}

TEST(app_recipients_file, SniffsTheFormatOfOtherNames) {
  TempDir dir;
  auto json = RecipientsFile::open(dir.write("list", "\n{\"email\":\"a@b.c\"}\n"));
  ASSERT_TRUE(json);
  EXPECT_EQ(json->format(), RecipientsFormat::kJsonLines);
  EXPECT_EQ(read_all(*json), (std::vector<std::string>{"ok 2 a@b.c b.c"}));

  auto csv = RecipientsFile::open(dir.write("people.dat", "# x\nid,EMAIL\n1,a@b.c\n"));
  ASSERT_TRUE(csv);
  EXPECT_EQ(csv->format(), RecipientsFormat::kCsv);
  EXPECT_EQ(read_all(*csv), (std::vector<std::string>{"ok 3 a@b.c b.c"}));

  auto text = RecipientsFile::open(dir.write("list.lst", "# x\na@b.c\nd@e.f\n"));
  ASSERT_TRUE(text);
  EXPECT_EQ(text->format(), RecipientsFormat::kText);
  EXPECT_EQ(read_all(*text), (std::vector<std::string>{"ok 2 a@b.c b.c", "ok 3 d@e.f e.f"}));
}

TEST(app_recipients_file, UnreadableFileIsAnError) {
  TempDir dir;
  auto missing = RecipientsFile::open(dir.path("missing.txt"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), "cannot read recipients file '" + dir.path("missing.txt") +
                                 "': No such file or directory");
  auto directory = RecipientsFile::open(dir.path(""));
  ASSERT_FALSE(directory);
  EXPECT_NE(directory.error().find("is a directory"), std::string::npos);
}

TEST(app_recipients_file, CountsRecordLines) {
  TempDir dir;
  EXPECT_EQ(
      count_record_lines(dir.write("a.txt", "# c\n\n a@b.c\n  \nd@e.f"), RecipientsFormat::kText),
      2u);
  EXPECT_EQ(count_record_lines(dir.write("a.csv", "email\r\na@b.c\r\n\r\nd@e.f\r\n"),
                               RecipientsFormat::kCsv),
            2u);
  EXPECT_EQ(
      count_record_lines(dir.write("a.jsonl", "{}\n\n{}\n{}\n"), RecipientsFormat::kJsonLines), 3u);
  EXPECT_EQ(count_record_lines(dir.write("e.csv", ""), RecipientsFormat::kCsv), 0u);
  EXPECT_FALSE(count_record_lines(dir.path("missing"), RecipientsFormat::kText));
}

TEST(app_recipients_file, StreamsALargeFile) {
  TempDir dir;
  std::string content;
  constexpr int kLines = 200000;
  for (int i = 0; i < kLines; ++i) content += "user" + std::to_string(i) + "@example.com\n";
  auto path = dir.write("big.txt", content);
  EXPECT_EQ(count_record_lines(path, RecipientsFormat::kText), uint64_t{kLines});
  auto file = RecipientsFile::open(path);
  ASSERT_TRUE(file);
  uint64_t ok = 0;
  while (auto record = file->next()) ok += record->has_value() ? 1 : 0;
  EXPECT_EQ(ok, uint64_t{kLines});
}

TEST(app_recipients_file, CountingSkipsAByteOrderMark) {
  TempDir dir;
  EXPECT_EQ(
      count_record_lines(dir.write("bom.txt", "\xEF\xBB\xBF# c\na@b.c\n"), RecipientsFormat::kText),
      1u);
  EXPECT_EQ(count_record_lines(dir.write("only.txt", "\xEF\xBB\xBF\n"), RecipientsFormat::kText),
            0u);
}

TEST(app_recipients_file, RefusesAnOverlongLineAndReadsOnAfterIt) {
  TempDir dir;
  constexpr size_t kMax = RecipientsFile::kMaxLineOctets;
  // At the cap, a line is read (and refused for what it holds); one octet more is refused
  // for its length, CR LF not counted. Lines around the reader's 4 KiB chunks too.
  const std::string at_cap(kMax, 'x');
  auto path = dir.write("long.txt", "a@b.c\n" + at_cap + "\r\n" + at_cap + "x\r\n" +
                                        std::string(4095, 'y') + "\n" + std::string(4096, 'y') +
                                        "\n" + std::string(1 << 20, 'z') + "\nd@e.f\n" +
                                        std::string(kMax + 2, 'w'));
  EXPECT_EQ(read_all(path), (std::vector<std::string>{
                                "ok 1 a@b.c b.c",
                                path + ":2: address longer than 254 octets",
                                path + ":3: line longer than 65536 octets (65537)",
                                path + ":4: address longer than 254 octets",
                                path + ":5: address longer than 254 octets",
                                path + ":6: line longer than 65536 octets (1048576)",
                                "ok 7 d@e.f e.f",
                                path + ":8: line longer than 65536 octets (65538)",
                            }));
}

TEST(app_recipients_file, OverlongLinesInCsvAndJsonLines) {
  TempDir dir;
  const std::string huge(100000, 'q');
  auto csv =
      dir.write("l.csv", "email,note\na@b.c," + huge + "\n\"c@d.e\",\"" + huge + "\"\nf@g.h,x\n");
  EXPECT_EQ(read_all(csv), (std::vector<std::string>{
                               csv + ":2: line longer than 65536 octets (100006)",
                               csv + ":3: line longer than 65536 octets (100010)",
                               "ok 4 f@g.h g.h",
                           }));
  // A quoted field spanning lines: the record is refused where its long line is.
  auto multi = dir.write("m.csv", "email,note\na@b.c,\"one\n" + huge + "\"\nf@g.h,x\n");
  auto records = read_all(multi);
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records.front(),
            multi + ":2: line 3 of the record is longer than 65536 octets (100001)");
  EXPECT_EQ(records.back(), "ok 4 f@g.h g.h");

  auto header = RecipientsFile::open(dir.write("h.csv", "email," + huge + "\na@b.c\n"));
  ASSERT_FALSE(header);
  EXPECT_EQ(header.error(), dir.path("h.csv") + ":1: line longer than 65536 octets (100006)");

  auto json =
      dir.write("l.jsonl", "{\"email\":\"a@b.c\",\"n\":\"" + huge + "\"}\n{\"email\":\"d@e.f\"}\n");
  EXPECT_EQ(read_all(json), (std::vector<std::string>{
                                json + ":1: line longer than 65536 octets (100024)",
                                "ok 2 d@e.f e.f",
                            }));
  // The format of an unnamed file is sniffed from the first 64 KiB of an overlong line.
  auto sniffed = RecipientsFile::open(dir.write("list", "{\"email\":\"" + huge + "\"}\n"));
  ASSERT_TRUE(sniffed);
  EXPECT_EQ(sniffed->format(), RecipientsFormat::kJsonLines);
  EXPECT_EQ(read_all(*sniffed),
            (std::vector<std::string>{dir.path("list") + ":1: line longer than 65536 octets "
                                                         "(100012)"}));
}

TEST(app_recipients_file, SkipsDuplicateAddressesSilentlyByDefault) {
  TempDir dir;
  auto file = RecipientsFile::open(dir.write("d.txt", "a@b.c\nA@B.C\nd@e.f\n a@b.c \n"));
  ASSERT_TRUE(file);
  EXPECT_EQ(read_all(*file), (std::vector<std::string>{"ok 1 a@b.c b.c", "ok 3 d@e.f e.f"}));
  EXPECT_EQ(file->duplicates(), 2u);
}

TEST(app_recipients_file, ReportsDuplicatesWithTheLineFirstSeen) {
  TempDir dir;
  auto path = dir.write("d.csv",
                        "email,name\n"
                        "a@b.c,A\n"
                        "bad,B\n"
                        "\"A@b.C\",C\n"  // the same address, compared lower-cased after parsing
                        "d@e.f,D\n"
                        "a@b.c,E\n");
  auto file = RecipientsFile::open(path);
  ASSERT_TRUE(file);
  file->report_duplicates(true);
  std::vector<std::string> kinds;
  while (auto record = file->next()) {
    if (*record) {
      kinds.push_back("ok " + (*record)->address);
    } else {
      kinds.push_back(std::string(record->error().duplicate() ? "duplicate " : "refused ") +
                      record->error().to_string());
    }
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{
                       "ok a@b.c",
                       "refused " + path + ":3: missing '@'",
                       "duplicate " + path + ":4: duplicate of line 2",
                       "ok d@e.f",
                       "duplicate " + path + ":6: duplicate of line 2",
                   }));
  EXPECT_EQ(file->duplicates(), 2u);
}

TEST(app_recipients_file, KnowsAFileWithoutRecords) {
  TempDir dir;
  auto empty = [&](std::string_view name, std::string_view content) {
    auto file = RecipientsFile::open(dir.write(name, content));
    EXPECT_TRUE(file) << file.error();
    return file && file->has_no_records();
  };
  EXPECT_TRUE(empty("e.txt", ""));
  EXPECT_TRUE(empty("c.txt", "# only\n\n   # comments\n"));
  EXPECT_TRUE(empty("b.txt", "\xEF\xBB\xBF"));
  EXPECT_TRUE(empty("b2.txt", "\xEF\xBB\xBF\r\n"));
  EXPECT_TRUE(empty("h.csv",
                    "\xEF\xBB\xBF"
                    "email\n\n"));
  EXPECT_TRUE(empty("e.jsonl", "\n  \n"));
  EXPECT_TRUE(empty("sniffed", "# nothing\n"));
  EXPECT_FALSE(empty("bad.txt", "# one bad line\nnot-an-address\n"));

  // The record read ahead is handed out by next(), once.
  auto file = RecipientsFile::open(dir.write("one.txt", "# x\na@b.c\nd@e.f\n"));
  ASSERT_TRUE(file);
  EXPECT_FALSE(file->has_no_records());
  EXPECT_FALSE(file->has_no_records());
  EXPECT_EQ(read_all(*file), (std::vector<std::string>{"ok 2 a@b.c b.c", "ok 3 d@e.f e.f"}));
  EXPECT_FALSE(file->next());
}

TEST(app_recipients_file, SeenAddressesKeepsEveryAddressAndItsFirstLineAcrossGrowth) {
  SeenAddresses seen;
  constexpr uint64_t kCount = 300000;  // several table doublings and arena blocks
  for (uint64_t i = 0; i < kCount; ++i) {
    ASSERT_FALSE(seen.find_or_add("u" + std::to_string(i) + "@example.test", i + 1)) << i;
  }
  EXPECT_EQ(seen.size(), kCount);
  for (uint64_t i = 0; i < kCount; i += 997) {
    EXPECT_EQ(seen.find_or_add("u" + std::to_string(i) + "@example.test", 0), i + 1) << i;
  }
  // Octet for octet: case folding is the caller's, and a prefix is another address.
  EXPECT_FALSE(seen.find_or_add("U0@example.test", 7));
  EXPECT_FALSE(seen.find_or_add("u0@example.tes", 8));
  EXPECT_EQ(seen.find_or_add("U0@example.test", 9), 7u);
  EXPECT_EQ(seen.size(), kCount + 2);
}

}  // namespace
}  // namespace ringmail::app

#include "app/recipients_job_source.h"

#include <gtest/gtest.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/app/temp_dir.h"

namespace ringmail::app {
namespace {

using testing::TempDir;

TEST(app_recipients_job_source, YieldsItemsAndReportsACappedNumberOfRefusals) {
  TempDir dir;
  std::string content;
  for (int i = 1; i <= 25; ++i) content += "bad" + std::to_string(i) + "\n";
  content += "a@b.example\nc@d.example\n";
  auto path = dir.write("list.txt", content);
  auto file = RecipientsFile::open(path);
  ASSERT_TRUE(file);

  std::ostringstream err;
  Console console(err, /*live_status=*/false);
  auto body = std::make_shared<const std::string>("Subject: x\r\n\r\nhi\r\n");
  RecipientsJobSource source(std::move(*file), "sender@example.com", body, console, 20);

  std::vector<std::string> recipients;
  while (auto item = source.next()) {
    EXPECT_EQ(item->sender, "sender@example.com");
    EXPECT_EQ(item->body, body);  // the same pointer: one stored body for the whole run
    recipients.push_back(item->recipient);
  }
  EXPECT_EQ(recipients, (std::vector<std::string>{"a@b.example", "c@d.example"}));
  EXPECT_EQ(source.accepted(), 2u);
  EXPECT_EQ(source.rejected(), 25u);
  EXPECT_TRUE(source.exhausted());
  EXPECT_FALSE(source.next());  // stays exhausted

  std::vector<std::string> lines;
  std::istringstream printed(err.str());
  for (std::string line; std::getline(printed, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 21u);
  EXPECT_EQ(lines.front(), path + ":1: missing '@'");
  EXPECT_EQ(lines[19], path + ":20: missing '@'");
  EXPECT_EQ(lines.back(), path + ": ... 5 more refused lines");
}

TEST(app_recipients_job_source, NoSummaryLineWhenUnderTheCap) {
  TempDir dir;
  auto file = RecipientsFile::open(dir.write("list.txt", "bad\nok@b.c\n"));
  ASSERT_TRUE(file);
  std::ostringstream err;
  Console console(err, false);
  RecipientsJobSource source(std::move(*file), "s@b.c", std::make_shared<const std::string>(),
                             console);
  while (source.next()) {
  }
  EXPECT_EQ(err.str(), dir.path("list.txt") + ":1: missing '@'\n");
  EXPECT_EQ(source.rejected(), 1u);
}

TEST(app_recipients_job_source, SendsADuplicateOnceAndCountsItApartFromRefusals) {
  TempDir dir;
  std::string content = "a@b.example\nbad\nA@B.example\n";
  for (int i = 0; i < 22; ++i) content += "c@d.example\n";
  auto path = dir.write("list.txt", content);
  auto file = RecipientsFile::open(path);
  ASSERT_TRUE(file);
  std::ostringstream err;
  Console console(err, false);
  RecipientsJobSource source(std::move(*file), "s@b.c", std::make_shared<const std::string>(),
                             console, 20);
  std::vector<std::string> recipients;
  while (auto item = source.next()) recipients.push_back(item->recipient);
  EXPECT_EQ(recipients, (std::vector<std::string>{"a@b.example", "c@d.example"}));
  EXPECT_EQ(source.accepted(), 2u);
  EXPECT_EQ(source.rejected(), 1u);  // a duplicate does not fail the run
  EXPECT_EQ(source.duplicates(), 22u);

  std::vector<std::string> lines;
  std::istringstream printed(err.str());
  for (std::string line; std::getline(printed, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 1u + 20u + 1u);
  EXPECT_EQ(lines[0], path + ":2: missing '@'");
  EXPECT_EQ(lines[1], path + ":3: duplicate of line 1");
  EXPECT_EQ(lines[2], path + ":5: duplicate of line 4");
  EXPECT_EQ(lines[20], path + ":23: duplicate of line 4");
  EXPECT_EQ(lines.back(), path + ": 22 duplicates skipped");
}

}  // namespace
}  // namespace ringmail::app

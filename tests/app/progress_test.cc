#include "app/progress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>

namespace ringmail::app {
namespace {

using Clock = ProgressMeter::Clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

ProgressCounts sample_counts() {
  ProgressCounts c;
  c.done = 45000;
  c.total = 100000;
  c.delivered = 44950;
  c.deferred = 50;
  return c;
}

TEST(app_progress, FormatsTheBarLine) {
  EXPECT_EQ(format_progress_line(sample_counts(), 38211, true),
            "[#########...........] 45,000/100,000 45% 38,211 rcpt/s ETA 1s | delivered 44,950 "
            "deferred 50 bounced 0");
}

TEST(app_progress, FormatsThePlainLineWithRejectsAndNoEtaWithoutRate) {
  ProgressCounts c = sample_counts();
  c.rejected = 3;
  EXPECT_EQ(format_progress_line(c, 0, false),
            "45,000/100,000 45% 0 rcpt/s | delivered 44,950 deferred 50 bounced 0 rejected 3");
}

TEST(app_progress, UnknownTotalLeavesOutBarPercentAndEta) {
  ProgressCounts c = sample_counts();
  c.total = 0;
  EXPECT_EQ(format_progress_line(c, 1000, true),
            "45,000 1,000 rcpt/s | delivered 44,950 deferred 50 bounced 0");
}

TEST(app_progress, CountsFromSnapshot) {
  engine::DeliverySnapshot d;
  d.recipients_delivered = 10;
  d.recipients_deferred = 2;
  d.recipients_bounced = 1;
  d.recipients_not_attempted = 1;
  auto running = make_progress_counts(d, /*rejected=*/3, /*taken=*/20, false, 100);
  EXPECT_EQ(running.done, 16u);  // not the one dropped unsent at a stop
  EXPECT_EQ(running.total, 100u);
  EXPECT_EQ(running.rejected, 3u);
  // The estimate never shows less than what was read; the end makes it exact.
  EXPECT_EQ(make_progress_counts(d, 3, 200, false, 100).total, 203u);
  EXPECT_EQ(make_progress_counts(d, 3, 20, true, 100).total, 23u);
  EXPECT_EQ(make_progress_counts(d, 3, 20, false, 0).total, 0u);
}

TEST(app_progress, ResolvesStyle) {
  EXPECT_EQ(resolve_progress_style(ProgressMode::kAuto, true), ProgressStyle::kBar);
  EXPECT_EQ(resolve_progress_style(ProgressMode::kAuto, false), ProgressStyle::kPlain);
  EXPECT_EQ(resolve_progress_style(ProgressMode::kBar, false), ProgressStyle::kBar);
  EXPECT_EQ(resolve_progress_style(ProgressMode::kOff, true), ProgressStyle::kOff);
}

TEST(app_progress, PlainLinesComeEveryInterval) {
  std::ostringstream err;
  Console console(err, false);
  const Clock::time_point start{};
  ProgressMeter meter(console, ProgressStyle::kPlain, seconds(5), start);
  ProgressCounts c = sample_counts();
  meter.update(start + seconds(1), c);
  meter.update(start + milliseconds(4900), c);
  EXPECT_EQ(err.str(), "");
  meter.update(start + seconds(5), c);
  meter.update(start + seconds(6), c);
  const std::string first = err.str();
  EXPECT_EQ(std::count(first.begin(), first.end(), '\n'), 1);
  EXPECT_TRUE(first.starts_with("progress: 45,000/100,000 45% ")) << first;
  meter.update(start + seconds(10), c);
  meter.finish(start + seconds(10), c);  // 45,000 in 10 s
  const std::string printed = err.str();
  EXPECT_EQ(std::count(printed.begin(), printed.end(), '\n'), 3);
  // The final line: the average rate and no ETA.
  EXPECT_TRUE(printed.ends_with(
      "progress: 45,000/100,000 45% 4,500 rcpt/s | delivered 44,950 deferred 50 bounced 0\n"))
      << printed;
}

TEST(app_progress, BarRedrawsInPlaceAndLeavesTheLastLine) {
  std::ostringstream err;
  Console console(err, true);
  const Clock::time_point start{};
  ProgressMeter meter(console, ProgressStyle::kBar, seconds(5), start);
  ProgressCounts c = sample_counts();
  meter.update(start + milliseconds(10), c);
  meter.update(start + milliseconds(100), c);  // too soon: not redrawn
  meter.update(start + milliseconds(250), c);
  const std::string printed = err.str();
  EXPECT_EQ(printed.find('\n'), std::string::npos);
  size_t redraws = 0;
  for (size_t at = printed.find("\r\x1b[K["); at != std::string::npos;
       at = printed.find("\r\x1b[K[", at + 1)) {
    ++redraws;
  }
  EXPECT_EQ(redraws, 2u);
  meter.finish(start + seconds(1), c);
  EXPECT_TRUE(err.str().ends_with("\n"));
}

TEST(app_progress, OffDrawsNothing) {
  std::ostringstream err;
  Console console(err, false);
  ProgressMeter meter(console, ProgressStyle::kOff, seconds(5), Clock::time_point{});
  meter.update(Clock::time_point{} + seconds(60), sample_counts());
  meter.finish(Clock::time_point{} + seconds(60), sample_counts());
  EXPECT_EQ(err.str(), "");
}

TEST(app_console, LinesPrintedDuringALiveStatusDoNotBreakIt) {
  std::ostringstream err;
  Console console(err, true, 12);
  console.show_status("status line that is too wide");
  console.print_line("list.txt:3: missing '@'");
  EXPECT_EQ(err.str(),
            "\r\x1b[Kstatus line"                             // cut to 11 columns
            "\r\x1b[Klist.txt:3: missing '@'\nstatus line");  // cleared, printed, redrawn
  console.end_status();
  EXPECT_TRUE(err.str().ends_with("status line\n"));
}

}  // namespace
}  // namespace ringmail::app

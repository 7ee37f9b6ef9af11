#include "app/progress.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "app/human_format.h"

namespace ringmail::app {
namespace {

constexpr size_t kBarWidth = 20;
constexpr auto kBarInterval = std::chrono::milliseconds(200);
constexpr auto kRateWindow = std::chrono::seconds(5);

}  // namespace

ProgressCounts make_progress_counts(const engine::DeliverySnapshot& delivery, uint64_t rejected,
                                    uint64_t taken, bool source_exhausted,
                                    uint64_t estimated_total) {
  ProgressCounts c;
  c.delivered = delivery.recipients_delivered;
  c.deferred = delivery.recipients_deferred;
  c.bounced = delivery.recipients_bounced;
  c.rejected = rejected;
  // Dropped unsent at a stop is not done: after a drain the bar shows what was sent.
  c.done = delivery.recipients_attempted() + rejected;
  const uint64_t read = taken + rejected;
  // The estimate counts lines, not records; never show a total below what was already read.
  c.total = source_exhausted ? read : (estimated_total == 0 ? 0 : std::max(estimated_total, read));
  return c;
}

std::string format_progress_line(const ProgressCounts& counts, double recipients_per_s,
                                 bool with_bar, bool with_eta) {
  std::string line;
  const bool known = counts.total > 0;
  const double fraction =
      known ? std::min(1.0, static_cast<double>(counts.done) / static_cast<double>(counts.total))
            : 0.0;
  if (with_bar && known) {
    size_t filled = static_cast<size_t>(fraction * kBarWidth);
    line += '[';
    line.append(filled, '#');
    line.append(kBarWidth - filled, '.');
    line += "] ";
  }
  line += group_thousands(counts.done);
  if (known) {
    line += fmt::format("/{} {}%", group_thousands(counts.total),
                        static_cast<int>(std::floor(fraction * 100)));
  }
  const double rate =
      std::isfinite(recipients_per_s) && recipients_per_s > 0 ? recipients_per_s : 0;
  line += fmt::format(" {} rcpt/s", group_thousands(static_cast<uint64_t>(std::llround(rate))));
  if (with_eta && known && rate > 0 && counts.done < counts.total) {
    line += " ETA " + format_duration(static_cast<double>(counts.total - counts.done) / rate);
  }
  line += fmt::format(" | delivered {} deferred {} bounced {}", group_thousands(counts.delivered),
                      group_thousands(counts.deferred), group_thousands(counts.bounced));
  if (counts.rejected > 0) line += " rejected " + group_thousands(counts.rejected);
  return line;
}

ProgressStyle resolve_progress_style(ProgressMode mode, bool stderr_is_terminal) {
  switch (mode) {
    case ProgressMode::kAuto:
      return stderr_is_terminal ? ProgressStyle::kBar : ProgressStyle::kPlain;
    case ProgressMode::kBar:
      return ProgressStyle::kBar;
    case ProgressMode::kPlain:
      return ProgressStyle::kPlain;
    case ProgressMode::kOff:
      return ProgressStyle::kOff;
  }
  return ProgressStyle::kOff;
}

ProgressMeter::ProgressMeter(Console& console, ProgressStyle style, engine::Seconds plain_interval,
                             Clock::time_point start)
    : console_(console),
      style_(style),
      interval_(style == ProgressStyle::kBar
                    ? Clock::duration(kBarInterval)
                    : std::chrono::duration_cast<Clock::duration>(plain_interval)),
      start_(start) {}

double ProgressMeter::recent_rate(Clock::time_point now, uint64_t done) {
  samples_.emplace_back(now, done);
  while (samples_.size() > 2 && samples_[1].first <= now - kRateWindow) samples_.pop_front();
  const auto& [then, done_then] = samples_.front();
  const double span = engine::Seconds(now - then).count();
  if (span < 0.5) return 0;  // too little to tell
  return static_cast<double>(done - std::min(done, done_then)) / span;
}

void ProgressMeter::update(Clock::time_point now, const ProgressCounts& counts) {
  if (style_ == ProgressStyle::kOff) return;
  const double rate = recent_rate(now, counts.done);
  // Plain lines wait a full interval before the first one: a short run logs only its end.
  const bool due = style_ == ProgressStyle::kBar
                       ? !drawn_ || now >= last_drawn_ + interval_
                       : now >= (drawn_ ? last_drawn_ : start_) + interval_;
  if (!due) return;
  last_drawn_ = now;
  drawn_ = true;
  const bool bar = style_ == ProgressStyle::kBar;
  console_.show_status(bar ? format_progress_line(counts, rate, true)
                           : "progress: " + format_progress_line(counts, rate, false));
}

void ProgressMeter::finish(Clock::time_point now, const ProgressCounts& counts) {
  if (style_ == ProgressStyle::kOff) return;
  const double elapsed = engine::Seconds(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(counts.done) / elapsed : 0;
  const bool bar = style_ == ProgressStyle::kBar;
  console_.show_status(bar ? format_progress_line(counts, rate, true, false)
                           : "progress: " + format_progress_line(counts, rate, false, false));
  console_.end_status();
}

}  // namespace ringmail::app

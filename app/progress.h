// The progress display on stderr: a live bar redrawn about five times a second on a
// terminal, a plain line every few seconds otherwise (logs, CI), fed from engine snapshots.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "app/config.h"
#include "app/console.h"
#include "engine/delivery_counters.h"

namespace ringmail::app {

struct ProgressCounts {
  uint64_t done = 0;   // recipients the engine finished, plus refused lines
  uint64_t total = 0;  // 0: not known
  uint64_t delivered = 0;
  uint64_t deferred = 0;
  uint64_t bounced = 0;
  uint64_t rejected = 0;
};

// `estimated_total` comes from count_record_lines(); once the source is exhausted the total
// is exact (`taken` recipients plus `rejected` lines).
ProgressCounts make_progress_counts(const engine::DeliverySnapshot& delivery, uint64_t rejected,
                                    uint64_t taken, bool source_exhausted,
                                    uint64_t estimated_total);

// "[#####.....] 45,000/100,000 45% 38,211 rcpt/s ETA 1s | delivered 44,950 deferred 50
// bounced 0" (one line); without `with_bar` the bar is left out, without `with_eta` the ETA
// (the final line has none). The total, percentage and ETA are left out while the total is
// unknown, "rejected N" is added once N > 0.
std::string format_progress_line(const ProgressCounts& counts, double recipients_per_s,
                                 bool with_bar, bool with_eta = true);

enum class ProgressStyle { kBar, kPlain, kOff };

// kAuto picks the bar on a terminal and plain lines elsewhere.
ProgressStyle resolve_progress_style(ProgressMode mode, bool stderr_is_terminal);

class ProgressMeter {
 public:
  using Clock = std::chrono::steady_clock;

  // `console` must outlive the meter. `start` is when sending began (for the final rate).
  ProgressMeter(Console& console, ProgressStyle style, engine::Seconds plain_interval,
                Clock::time_point start);

  // Records a sample and redraws when due. Call it often (each tick of the main loop).
  void update(Clock::time_point now, const ProgressCounts& counts);
  // Draws the last line whatever the timing, at the average rate, and leaves it on screen.
  void finish(Clock::time_point now, const ProgressCounts& counts);

 private:
  // Recipients per second over the last few seconds, so the ETA follows the current pace.
  double recent_rate(Clock::time_point now, uint64_t done);

  Console& console_;
  const ProgressStyle style_;
  const Clock::duration interval_;
  const Clock::time_point start_;
  Clock::time_point last_drawn_{};
  bool drawn_ = false;
  std::deque<std::pair<Clock::time_point, uint64_t>> samples_;
};

}  // namespace ringmail::app

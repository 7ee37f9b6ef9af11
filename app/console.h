// Serializes what ringmail writes to stderr during a run, so a note from the feeder thread
// never lands in the middle of the live progress line.
#pragma once

#include <mutex>
#include <ostream>
#include <string>
#include <string_view>

namespace ringmail::app {

class Console {
 public:
  // `out` must outlive the Console. With `live_status` (a terminal), the status line is
  // redrawn in place and cut to `width` columns (0: no limit); without, every status is
  // printed as a line of its own.
  Console(std::ostream& out, bool live_status, size_t width = 0);

  // A line that stays. Thread-safe.
  void print_line(std::string_view line);
  // Replaces the status line. Thread-safe.
  void show_status(std::string_view status);
  // Leaves the current status line on screen and moves below it. Thread-safe.
  void end_status();

  bool live_status() const { return live_status_; }

 private:
  std::mutex mutex_;
  std::ostream& out_;
  const bool live_status_;
  const size_t width_;
  std::string status_;  // the status on screen (live mode), "" when none
};

// Columns of the terminal on stderr; 0 when it is not a terminal or does not say.
size_t terminal_width();

}  // namespace ringmail::app

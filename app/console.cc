#include "app/console.h"

#include <sys/ioctl.h>
#include <unistd.h>

namespace ringmail::app {

size_t terminal_width() {
  winsize ws{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}
namespace {

constexpr std::string_view kClearLine = "\r\x1b[K";  // to column 0, erase to end of line

}  // namespace

Console::Console(std::ostream& out, bool live_status, size_t width)
    : out_(out), live_status_(live_status), width_(width) {}

void Console::print_line(std::string_view line) {
  std::lock_guard lock(mutex_);
  // One write per call: std::cerr is unbuffered, and pieces would interleave with other
  // writers (and flicker on a terminal).
  std::string text;
  if (!status_.empty()) text += kClearLine;
  text += line;
  text += '\n';
  text += status_;
  out_ << text << std::flush;
}

void Console::show_status(std::string_view status) {
  std::lock_guard lock(mutex_);
  if (!live_status_) {
    out_ << std::string(status) + '\n' << std::flush;
    return;
  }
  // Wider than the terminal would wrap, and '\r' would then redraw only the last row.
  status_ =
      std::string(width_ > 1 && status.size() >= width_ ? status.substr(0, width_ - 1) : status);
  out_ << std::string(kClearLine) + status_ << std::flush;
}

void Console::end_status() {
  std::lock_guard lock(mutex_);
  if (status_.empty()) return;
  out_ << '\n' << std::flush;
  status_.clear();
}

}  // namespace ringmail::app

#include "storage/database_change_watch.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstdint>
#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace ringmail::storage {

std::optional<DatabaseChangeWatch> DatabaseChangeWatch::open(const std::string& database_path) {
  // Split by hand: GCC 12 at -O2 warns falsely (-Wrestrict) on the std::string
  // assignments that std::filesystem::path's parts led to.
  // SQLite puts the WAL beside the database file itself, so a symlink's target counts.
  std::string real_path = database_path;
  if (char* resolved = ::realpath(database_path.c_str(), nullptr)) {
    real_path = resolved;
    std::free(resolved);
  }
  const size_t slash = real_path.rfind('/');
  const std::string directory = slash == std::string::npos ? std::string(".")
                                : slash == 0               ? std::string("/")
                                                           : real_path.substr(0, slash);
  std::string wal_name = slash == std::string::npos ? real_path : real_path.substr(slash + 1);
  wal_name.append("-wal");
  const int inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) return std::nullopt;
  // The directory, not the file: the WAL is created, truncated and may be deleted when
  // the last connection closes, and a watch on the file itself would die with it.
  // IN_CLOSE_WRITE too: a commit becomes visible when the writer updates the -shm index
  // (mmap'ed, no event) just after its last WAL write, so a reader woken by that write can
  // look too early; the writer closing the WAL (an `enqueue` exiting) comes after.
  if (::inotify_add_watch(inotify_fd, directory.c_str(),
                          IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO) < 0) {
    ::close(inotify_fd);
    return std::nullopt;
  }
  const int wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    ::close(inotify_fd);
    return std::nullopt;
  }
  return DatabaseChangeWatch(inotify_fd, wake_fd, std::move(wal_name));
}

DatabaseChangeWatch::DatabaseChangeWatch(DatabaseChangeWatch&& other) noexcept
    : inotify_fd_(other.inotify_fd_), wake_fd_(other.wake_fd_), wal_name_(std::move(other.wal_name_)) {
  other.inotify_fd_ = other.wake_fd_ = -1;
}

DatabaseChangeWatch::~DatabaseChangeWatch() {
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void DatabaseChangeWatch::wake() {
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

bool DatabaseChangeWatch::drain() {
  // Events are small (a header and the name); a buffer of this size holds dozens.
  alignas(inotify_event) char buffer[4096];
  bool seen = false;
  while (true) {
    const ssize_t n = ::read(inotify_fd_, buffer, sizeof buffer);
    if (n <= 0) return seen;  // EAGAIN: nothing more queued
    for (ssize_t at = 0; at < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
      // IN_Q_OVERFLOW: events were lost, one of them may have been the WAL's.
      // The name is NUL-terminated (and padded) within its len.
      if ((event->mask & IN_Q_OVERFLOW) || (event->len > 0 && wal_name_ == event->name))
        seen = true;
      at += ssize_t(sizeof(inotify_event) + event->len);
    }
  }
}

bool DatabaseChangeWatch::wait(std::chrono::milliseconds timeout) {
  pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    const int ready = ::poll(fds, 2, int(std::min<int64_t>(left.count(), INT32_MAX)));
    if (ready <= 0) {
      if (ready < 0 && errno == EINTR) continue;
      return false;  // the timeout (or an error, which the caller's poll covers)
    }
    if (fds[1].revents & POLLIN) return false;  // woken: the caller looks at why
    // Other files of the directory (another database, the -shm is mmap'ed and silent)
    // are read and ignored.
    if ((fds[0].revents & POLLIN) && drain()) return true;
  }
}

}  // namespace ringmail::storage

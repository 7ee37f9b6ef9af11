// Wakes a waiting `run` service as soon as another process commits to its database (a
// receipt's `enqueue`): an inotify watch on the database's directory for writes to its WAL
// file, so new work is seen within milliseconds instead of at the next idle poll.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace ringmail::storage {

class DatabaseChangeWatch {
 public:
  // nullopt when inotify is not available (its limits reached, a file system without
  // it): the caller keeps polling, as it always does besides.
  static std::optional<DatabaseChangeWatch> open(const std::string& database_path);
  ~DatabaseChangeWatch();
  DatabaseChangeWatch(DatabaseChangeWatch&& other) noexcept;
  DatabaseChangeWatch& operator=(DatabaseChangeWatch&&) = delete;
  DatabaseChangeWatch(const DatabaseChangeWatch&) = delete;

  // One thread: waits up to `timeout` for a write to the database's WAL, or for wake().
  // True when a write was seen (every pending event is consumed).
  bool wait(std::chrono::milliseconds timeout);
  // Any thread: ends the current wait and every later one at once.
  void wake();

 private:
  DatabaseChangeWatch(int inotify_fd, int wake_fd, std::string wal_name)
      : inotify_fd_(inotify_fd), wake_fd_(wake_fd), wal_name_(std::move(wal_name)) {}
  // Reads every queued event; true if one names the WAL file.
  bool drain();

  int inotify_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd, left readable once woken
  std::string wal_name_;
};

}  // namespace ringmail::storage

// Structured outcome log: one line per recipient of every finished SMTP transaction (an
// attempt and the state it left the recipient in), and, with a database, one line per
// state the database records for it (deferred until when, expired, bounced and
// suppressed...), as logfmt or JSON Lines, for a log shipper. Shards only copy the outcome into their own queue; a logger thread formats
// and writes. When the writer falls behind, lines are dropped and counted, never waited
// for. Only allow-listed fields are written: no message content, no credentials (ringmail
// has none yet; AUTH secrets must never be added to a line when AUTH arrives).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <expected>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/seams.h"
#include "metrics/delivery_collector.h"

namespace ringmail::metrics {

enum class LogFormat { kLogfmt, kJson };

const char* to_string(LogFormat format);

struct OutcomeLogOptions {
  LogFormat format = LogFormat::kLogfmt;
  unsigned shards = 1;  // one queue each; a shard index beyond wraps around
  // Lines waiting in one shard's queue past which new lines are dropped (and counted).
  size_t max_queued_lines_per_shard = 1 << 18;
  // How often the logger thread drains the queues. Shards never wake it (that would be a
  // futex call per transaction on the hot path).
  std::chrono::milliseconds drain_interval{50};
};

// One recipient's line, as the logger formats it. Exposed for the unit tests.
struct OutcomeLine {
  std::chrono::system_clock::time_point time;
  unsigned shard = 0;
  uint64_t transaction = 0;
  uint64_t tag = 0;
  bool attempted = true;  // false: nothing of the transaction reached the server
                          // (written as status=not_attempted)
  // Given back unsent because the destination had a backlog (written as status=parked,
  // not deferred: the recipient comes back, and counting it as a deferral would mislead).
  bool parked = false;
  std::string sender;
  std::string recipient;
  smtp::RecipientStatus status = smtp::RecipientStatus::kDeferred;
  smtp::Reply reply;
  // TransactionOutcome::transport_security ("TLSv1.3 TLS_AES_256_GCM_SHA384 verified",
  // empty for plaintext), written as `tls`, `cipher` and `verified`.
  std::string transport_security{};
};

// The line without its '\n'. logfmt values are quoted when they hold a space, '=', '"'
// or a control byte; JSON strings are escaped and invalid UTF-8 replaced.
std::string format_outcome_line(const OutcomeLine& line, LogFormat format);

// A recipient's new state as the database committed it (event=recipient_state): what an
// outcome line cannot know, i.e. the attempt count, when the next attempt is due, that a
// deferral expired, that a bounce put the address on the suppression list.
struct StateChangeLine {
  std::chrono::system_clock::time_point time;
  uint64_t tag = 0;       // the recipient's id in the database (the outcome line's tag)
  std::string recipient;
  std::string state;      // the database's word: deferred, bounced, expired, queued...
  int64_t attempts = 0;
  std::optional<std::chrono::system_clock::time_point> next_attempt;  // deferred, queued
  bool suppressed = false;  // the address was added to the suppression list
  smtp::Reply reply;        // the reply that decided it
};

std::string format_state_change_line(const StateChangeLine& line, LogFormat format);

class OutcomeLogger final : public engine::OutcomeSink {
 public:
  // Writes to `out`, which must stay open while the logger lives (it is not closed);
  // `out` is written by the logger thread only.
  OutcomeLogger(std::FILE* out, OutcomeLogOptions options);
  // Opens `path` for appending ("-": stderr) and starts the logger; the error names it.
  static std::expected<std::unique_ptr<OutcomeLogger>, std::string> open(const std::string& path,
                                                                         OutcomeLogOptions options);
  // Writes every line queued so far, then stops the thread (and closes a file it opened).
  ~OutcomeLogger() override;
  OutcomeLogger(const OutcomeLogger&) = delete;
  OutcomeLogger& operator=(const OutcomeLogger&) = delete;

  // Shard threads: copies what the line needs (not the body) into the shard's queue.
  void on_transaction_finished(unsigned shard, const smtp::TransactionOutcome& outcome) override;

  // Any thread (the storage thread, after a commit): queues state lines in a queue of
  // their own, dropped and counted like a shard's when the writer falls behind.
  void log_state_changes(std::vector<StateChangeLine> lines);

  // Any thread: waits until every line queued before the call is written and flushed.
  void flush();
  // Any thread: the logger thread reopens the file it opened (logrotate's SIGHUP after
  // renaming it), after writing what was queued to the old one. No effect on stderr or a
  // FILE* given by the caller. If the path cannot be opened, the old file is kept and
  // the reason is printed on stderr.
  void reopen();

  uint64_t lines_written() const { return written_.load(std::memory_order_relaxed); }
  uint64_t lines_dropped() const;

  // ringmail_log_lines_written_total and ringmail_log_lines_dropped_total, for the
  // collector. The logger must outlive every scrape that calls it.
  FamilyProvider metrics_provider() const;

 private:
  struct Record {
    std::chrono::system_clock::time_point time;
    unsigned shard;
    uint64_t transaction;
    bool attempted;
    bool parked;
    std::string sender;
    std::vector<std::string> recipients;
    std::vector<uint64_t> tags;
    std::vector<smtp::RecipientOutcome> outcomes;
    std::string transport_security;
  };
  struct alignas(64) ShardQueue {  // a cache line each: shards do not share one
    std::mutex mutex;
    std::vector<Record> records;
    size_t lines = 0;
    std::atomic<uint64_t> dropped{0};
  };

  void run();
  bool drain_once();  // true when something was written

  std::FILE* out_;
  bool owns_out_ = false;
  std::string path_;  // the file open() opened; reopen() opens it again
  OutcomeLogOptions options_;
  std::vector<std::unique_ptr<ShardQueue>> queues_;
  struct StateQueue {
    std::mutex mutex;
    std::vector<StateChangeLine> lines;
    std::atomic<uint64_t> dropped{0};
  } states_;
  std::atomic<uint64_t> written_{0};

  std::mutex control_mutex_;
  std::condition_variable control_cv_;
  bool stopping_ = false;
  bool reopen_requested_ = false;
  uint64_t flush_requests_ = 0, flushes_done_ = 0;
  std::thread thread_;
};

}  // namespace ringmail::metrics

#include "metrics/outcome_log.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <concepts>
#include <cstring>
#include <ctime>
#include <string_view>
#include <utility>

namespace ringmail::metrics {
namespace {

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t seconds = std::time_t(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms % 1000));
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (unsigned char c : v)
    if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f) return true;
  return false;
}

void append_logfmt(std::string& out, std::string_view key, std::string_view value) {
  if (!out.empty()) out += ' ';
  out += key;
  out += '=';
  if (!needs_quotes(value)) {
    out += value;
    return;
  }
  out += '"';
  for (unsigned char c : value) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
        else out += char(c);
    }
  }
  out += '"';
}

// One line's fields in order, written as a JSON object or as logfmt, so that each line's
// fields are listed once for both formats.
class LineWriter {
 public:
  explicit LineWriter(LogFormat format) : json_(format == LogFormat::kJson) {}

  void text(std::string_view key, std::string_view value) {
    if (json_) json_line_[std::string(key)] = std::string(value);
    else append_logfmt(logfmt_line_, key, value);
  }
  template <std::integral T>
  void number(std::string_view key, T value) {
    if (json_) json_line_[std::string(key)] = value;
    else append_logfmt(logfmt_line_, key, std::to_string(value));
  }
  void flag(std::string_view key, bool value) {
    if (json_) json_line_[std::string(key)] = value;
    else append_logfmt(logfmt_line_, key, value ? "true" : "false");
  }
  // `tls=none` for plaintext, else `tls`, `cipher` and `verified` from the words of
  // TransactionOutcome::transport_security: "<version> <cipher> verified|unverified
  // [resumed]" (engine/shard_outcomes.cc writes it).
  void transport_security(std::string_view security) {
    auto next_word = [&security] {
      const size_t end = std::min(security.find(' '), security.size());
      std::string_view word = security.substr(0, end);
      security.remove_prefix(std::min(end + 1, security.size()));
      return word;
    };
    const std::string_view version = next_word();
    if (version.empty()) {
      text("tls", "none");
      return;
    }
    text("tls", version);
    text("cipher", next_word());
    flag("verified", next_word() == "verified");
  }
  // The reply fields both line kinds end with.
  void reply(const smtp::Reply& r) {
    number("code", r.code);
    text("enhanced", r.enhanced.to_string());
    text("reply", r.text);
  }

  std::string finish() {
    if (!json_) return std::move(logfmt_line_);
    return json_line_.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

 private:
  bool json_;
  nlohmann::json json_line_;
  std::string logfmt_line_;
};

}  // namespace

const char* to_string(LogFormat format) {
  return format == LogFormat::kJson ? "json" : "logfmt";
}

std::string format_outcome_line(const OutcomeLine& l, LogFormat format) {
  LineWriter w(format);
  w.text("ts", rfc3339(l.time));
  w.text("event", "recipient_outcome");
  w.number("shard", l.shard);
  w.number("transaction", l.transaction);
  w.number("tag", l.tag);
  w.text("from", l.sender);
  w.text("rcpt", l.recipient);
  // Nothing reached the server (a drain, a destination given up): not a deferral by any
  // server, and the summary and metrics count it as not_attempted too, so a restart does
  // not look like a burst of deferrals to whoever counts status in the log.
  w.text("status", l.parked                                                  ? "parked"
                   : !l.attempted && l.status != smtp::RecipientStatus::kDelivered
                       ? "not_attempted"
                       : smtp::to_string(l.status));
  w.flag("attempted", l.attempted);
  w.transport_security(l.transport_security);
  w.reply(l.reply);
  return w.finish();
}

std::string format_state_change_line(const StateChangeLine& l, LogFormat format) {
  LineWriter w(format);
  w.text("ts", rfc3339(l.time));
  w.text("event", "recipient_state");
  w.number("tag", l.tag);
  w.text("rcpt", l.recipient);
  w.text("state", l.state);
  w.number("attempts", l.attempts);
  if (l.next_attempt) w.text("next_attempt", rfc3339(*l.next_attempt));
  if (l.suppressed) w.flag("suppressed", true);
  w.reply(l.reply);
  return w.finish();
}

OutcomeLogger::OutcomeLogger(std::FILE* out, OutcomeLogOptions options)
    : out_(out), options_(options) {
  if (options_.shards == 0) options_.shards = 1;
  for (unsigned i = 0; i < options_.shards; ++i) queues_.push_back(std::make_unique<ShardQueue>());
  thread_ = std::thread([this] { run(); });
}

std::expected<std::unique_ptr<OutcomeLogger>, std::string> OutcomeLogger::open(
    const std::string& path, OutcomeLogOptions options) {
  if (path == "-") return std::make_unique<OutcomeLogger>(stderr, options);
  std::FILE* f = std::fopen(path.c_str(), "ae");
  if (f == nullptr)
    return std::unexpected(fmt::format("cannot open log file '{}': {}", path, std::strerror(errno)));
  auto logger = std::make_unique<OutcomeLogger>(f, options);
  logger->owns_out_ = true;
  logger->path_ = path;  // before any reopen() can be asked: the caller has no logger yet
  return logger;
}

OutcomeLogger::~OutcomeLogger() {
  {
    std::lock_guard lock(control_mutex_);
    stopping_ = true;
  }
  control_cv_.notify_all();
  thread_.join();
  if (owns_out_) std::fclose(out_);
}

void OutcomeLogger::on_transaction_finished(unsigned shard,
                                            const smtp::TransactionOutcome& outcome) {
  ShardQueue& q = *queues_[shard % queues_.size()];
  const size_t lines = outcome.recipients.size();
  // Copied before the lock; the body (shared by every transaction) is never touched.
  Record r{std::chrono::system_clock::now(),
           shard,
           outcome.transaction.id,
           !outcome.not_attempted,
           outcome.not_attempted && outcome.retry_after.count() > 0,
           outcome.transaction.sender,
           outcome.transaction.recipients,
           outcome.transaction.recipient_tags,
           outcome.recipients,
           outcome.transport_security};
  // Only this shard and the logger's O(1) swap ever take this lock.
  std::lock_guard lock(q.mutex);
  if (q.lines + lines > options_.max_queued_lines_per_shard) {
    q.dropped.fetch_add(lines, std::memory_order_relaxed);
    return;
  }
  q.lines += lines;
  q.records.push_back(std::move(r));
}

void OutcomeLogger::log_state_changes(std::vector<StateChangeLine> lines) {
  if (lines.empty()) return;
  std::lock_guard lock(states_.mutex);
  if (states_.lines.size() + lines.size() > options_.max_queued_lines_per_shard) {
    states_.dropped.fetch_add(lines.size(), std::memory_order_relaxed);
    return;
  }
  if (states_.lines.empty()) {
    states_.lines = std::move(lines);
  } else {
    states_.lines.insert(states_.lines.end(), std::make_move_iterator(lines.begin()),
                         std::make_move_iterator(lines.end()));
  }
}

bool OutcomeLogger::drain_once() {
  bool wrote = false;
  std::vector<Record> batch;
  std::string text;
  // Taken before the shards' queues: a state is committed after its attempt's outcome
  // line was queued, so every state taken here follows its outcome line in the file.
  std::vector<StateChangeLine> states;
  {
    std::lock_guard lock(states_.mutex);
    states.swap(states_.lines);
  }
  for (auto& qp : queues_) {
    ShardQueue& q = *qp;
    {
      std::lock_guard lock(q.mutex);
      batch.swap(q.records);
      q.lines = 0;
    }
    for (const Record& r : batch) {
      for (size_t i = 0; i < r.recipients.size() && i < r.outcomes.size(); ++i) {
        OutcomeLine line{r.time,
                         r.shard,
                         r.transaction,
                         i < r.tags.size() ? r.tags[i] : 0,
                         r.attempted,
                         r.parked,
                         r.sender,
                         r.recipients[i],
                         r.outcomes[i].status,
                         r.outcomes[i].reply,
                         r.transport_security};
        text += format_outcome_line(line, options_.format);
        text += '\n';
        written_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    batch.clear();
    if (text.size() > (1 << 16)) {
      std::fwrite(text.data(), 1, text.size(), out_);
      text.clear();
      wrote = true;
    }
  }
  for (const StateChangeLine& line : states) {
    text += format_state_change_line(line, options_.format);
    text += '\n';
    written_.fetch_add(1, std::memory_order_relaxed);
  }
  if (!text.empty()) {
    std::fwrite(text.data(), 1, text.size(), out_);
    wrote = true;
  }
  return wrote;
}

void OutcomeLogger::run() {
  std::unique_lock lock(control_mutex_);
  while (true) {
    control_cv_.wait_for(lock, options_.drain_interval, [&] {
      return stopping_ || reopen_requested_ || flush_requests_ > flushes_done_;
    });
    const bool stop = stopping_;
    const uint64_t requested = flush_requests_;
    const bool flush_asked = requested > flushes_done_;
    const bool reopen = std::exchange(reopen_requested_, false);
    lock.unlock();
    if (drain_once() || flush_asked || reopen) std::fflush(out_);
    if (reopen && owns_out_) {
      // Lines queued before the request are in the old file; the new one gets the rest.
      if (std::FILE* f = std::fopen(path_.c_str(), "ae")) {
        std::fclose(out_);
        out_ = f;
      } else {
        std::fprintf(stderr, "ringmail: cannot reopen log file '%s': %s (still writing the old one)\n",
                     path_.c_str(), std::strerror(errno));
      }
    }
    lock.lock();
    flushes_done_ = requested;
    control_cv_.notify_all();
    if (stop) return;
  }
}

void OutcomeLogger::reopen() {
  {
    std::lock_guard lock(control_mutex_);
    reopen_requested_ = true;
  }
  control_cv_.notify_all();
}

void OutcomeLogger::flush() {
  std::unique_lock lock(control_mutex_);
  const uint64_t mine = ++flush_requests_;
  control_cv_.notify_all();
  control_cv_.wait(lock, [&] { return flushes_done_ >= mine || stopping_; });
}

uint64_t OutcomeLogger::lines_dropped() const {
  uint64_t n = 0;
  for (const auto& q : queues_) n += q->dropped.load(std::memory_order_relaxed);
  return n + states_.dropped.load(std::memory_order_relaxed);
}

FamilyProvider OutcomeLogger::metrics_provider() const {
  return [this](std::vector<prometheus::MetricFamily>& out) {
    out.push_back(counter_family("ringmail_log_lines_written_total",
                                 "Outcome log lines written", double(lines_written())));
    out.push_back(counter_family(
        "ringmail_log_lines_dropped_total",
        "Outcome log lines dropped because the log writer fell behind the shards",
        double(lines_dropped())));
  };
}

}  // namespace ringmail::metrics

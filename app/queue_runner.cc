#include "app/queue_runner.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>

#include "app/console.h"
#include "app/human_format.h"
#include "app/observability.h"
#include "app/progress.h"
#include "app/rfc3339.h"
#include "engine/engine.h"
#include "metrics/storage_families.h"
#include "storage/database_job_source.h"
#include "storage/queue_store.h"

namespace ringmail::app {
namespace {

using Clock = std::chrono::steady_clock;

void print_queue_run(const QueueRunReport& report, SummaryFormat format, bool quiet);

// The outcome log's words for what the storage thread committed.
std::vector<metrics::StateChangeLine> state_lines(const std::vector<storage::StateChange>& changes) {
  using std::chrono::milliseconds;
  using std::chrono::system_clock;
  std::vector<metrics::StateChangeLine> lines;
  lines.reserve(changes.size());
  for (const storage::StateChange& c : changes) {
    metrics::StateChangeLine l;
    l.time = system_clock::time_point(milliseconds(c.at_ms));
    l.tag = static_cast<uint64_t>(c.recipient_id);
    l.recipient = c.applied.address;
    l.state = std::string(to_string(c.state));
    l.attempts = c.applied.attempts;
    const bool waits =
        c.state == storage::RecipientState::kDeferred || c.state == storage::RecipientState::kQueued;
    if (waits && c.applied.next_attempt_at_ms > 0)
      l.next_attempt = system_clock::time_point(milliseconds(c.applied.next_attempt_at_ms));
    l.suppressed = c.applied.suppressed;
    l.reply = c.reply;
    lines.push_back(std::move(l));
  }
  return lines;
}

}  // namespace

std::string storage_error_hint(const storage::StorageError& e) { return std::string(e.hint()); }

std::expected<QueueRunReport, std::string> deliver_queue(const Config& c,
                                                         engine::RouteResolver& resolver,
                                                         StopSignals& signals,
                                                         Observability& observability,
                                                         const QueueRunOptions& options) {
  auto with_hint = [](const storage::StorageError& e) { return e.message + storage_error_hint(e); };
  // A service creates its database: a fresh install (an empty volume, a new state
  // directory) starts and waits for work instead of failing until someone enqueues. A
  // one-shot --until-done on a missing path is more likely a typo: refused.
  std::error_code ignored;
  const bool create = !options.until_done && !std::filesystem::exists(c.storage.path, ignored);
  auto store = storage::QueueStore::open(
      c.storage, create ? storage::OpenMode::kReadWriteCreate : storage::OpenMode::kReadWriteExisting);
  if (!store) return std::unexpected(with_hint(store.error()));
  if (create)
    std::cerr << fmt::format("ringmail: created an empty queue database {}; `ringmail enqueue "
                             "--db {}` adds work\n",
                             c.storage.path, c.storage.path);
  QueueRunReport report;
  const int64_t started_ms = storage::unix_now_ms();
  auto recovered = store->recover_leases(started_ms);
  if (!recovered) return std::unexpected(with_hint(recovered.error()));
  report.recovered = *recovered;
  auto suppressed = store->apply_suppressions(started_ms);
  if (!suppressed) return std::unexpected(with_hint(suppressed.error()));
  auto owner = store->register_run(started_ms);
  if (!owner) return std::unexpected(with_hint(owner.error()));

  const ProgressMode mode = options.quiet ? ProgressMode::kOff : c.progress.mode;
  const ProgressStyle style = resolve_progress_style(mode, isatty(STDERR_FILENO) == 1);
  Console console(std::cerr, style == ProgressStyle::kBar,
                  style == ProgressStyle::kBar ? terminal_width() : 0);
  if (report.recovered > 0 && style != ProgressStyle::kOff)
    console.print_line(fmt::format("ringmail: {} recipients in flight in a run that is gone are "
                                   "queued again",
                                   group_thousands(report.recovered)));
  // Leases this run cannot take back: another run's, alive or on another host (a new
  // container or pod has another host name). Said, so --until-done's "nothing due" is not
  // mistaken for "everything sent".
  if (auto foreign = store->leased_by_other_runs(*owner);
      foreign && foreign->recipients > 0 && style != ProgressStyle::kOff)
    console.print_line(fmt::format(
        "ringmail: {} recipients are in flight under another run (still running, or on "
        "another host); they are queued again when their lease expires, from {}",
        group_thousands(foreign->recipients), format_rfc3339(foreign->first_expiry_ms)));

  // Declared before stop_exporter_first below, so it is destroyed after the exporter
  // stops: a scrape reads its metrics until then.
  if (options.only_message) store->limit_to_message(*options.only_message);
  storage::StateChangeListener log_states;
  if (metrics::OutcomeLogger* log = observability.outcome_log.get())
    log_states = [log](std::vector<storage::StateChange> changes) {
      log->log_state_changes(state_lines(changes));
    };
  // Said even with --quiet: a held lock or a dead sibling run is for the operator to see.
  // The console outlives the thread (declared before it).
  storage::StorageWarningListener warn = [&console](const std::string& line) {
    console.print_line("ringmail: " + line);
  };
  // Retention is the service's: a one-shot run or `send` does not purge on its way out.
  // Said at a service's start: it deletes rows someone may read for history.
  storage::StorageOptions storage_options = c.storage;
  if (options.until_done) storage_options.retention = storage::Seconds(0);
  else if (!options.quiet)
    console.print_line(
        storage_options.retention.count() > 0
            ? fmt::format("ringmail: retention: recipients in a final state are removed {} "
                          "after their last change (storage.retention; 0 keeps everything)",
                          age_text(storage_options.retention.count()))
            : "ringmail: retention: off (storage.retention = 0), nothing is removed");
  auto storage_thread = std::make_unique<storage::StorageThread>(
      std::move(*store), *owner, storage_options, c.retry, std::move(log_states), std::move(warn));
  storage_thread->count_startup_changes(storage::RecipientState::kSuppressed, *suppressed);
  // The log first: the storage thread may commit an outcome and hand its state change to
  // the log before the log has the outcome's own line, which must come first.
  FanOutSink sink(observability.outcome_log.get(), storage_thread.get());
  // Each pass has its own engine; a scrape sees the passes before it plus the current one.
  std::mutex sample_mutex;
  engine::DeliverySnapshot finished_passes;
  uint64_t finished_taken = 0;
  engine::Engine* current_engine = nullptr;
  observability.expose([&]() {
    std::lock_guard lock(sample_mutex);
    metrics::EngineSample sample{finished_passes, finished_taken, 0};
    if (current_engine) {
      sample.delivery.add(current_engine->snapshot());
      sample.recipients_taken += current_engine->recipients_taken();
      sample.shards = current_engine->shard_count();
    }
    return sample;
  }, {metrics::storage_provider(*storage_thread, c.storage)});
  StopExporterFirst stop_exporter_first{observability};
  const Clock::time_point start = Clock::now();
  ProgressMeter meter(console, style, c.progress.plain_interval, start);
  engine::DeliverySnapshot total;
  uint64_t taken = 0;
  bool interrupted = false;
  // The database keeps parked work, so passes from it may park (PoolLimits::max_backlog).
  engine::EngineOptions engine_options = c.engine;
  engine_options.pool.max_backlog = c.pool_max_backlog;
  auto counts_of = [&](const engine::DeliverySnapshot& s, uint64_t taken_now) {
    // A parked recipient is taken again later: count it once.
    taken_now -= std::min(taken_now, s.recipients_parked);
    return make_progress_counts(s, options.rejected_lines, taken_now, false,
                                options.expected_recipients + options.rejected_lines);
  };

  // As a service, one pass: its source follows the database (waits for work to become
  // due rather than ending), so one engine with its pools, connections, DNS cache and TLS
  // sessions lives as long as the process, and a receipt enqueued while a slow
  // destination is still being worked through goes out at once instead of waiting for
  // that destination to finish. --until-done runs passes until nothing is due.
  std::optional<std::chrono::milliseconds> follow;
  if (!options.until_done)
    follow = std::chrono::milliseconds(
        std::max<int64_t>(1, static_cast<int64_t>(c.storage.idle_poll.count() * 1000)));
  while (true) {
    storage::DatabaseJobSource source(*storage_thread, c.storage.claim_batch, follow,
                                      c.storage.path);
    engine::DeliverySnapshot pass_counts;
    {
      std::unique_ptr<engine::Engine> engine;
      try {
        engine = std::make_unique<engine::Engine>(engine_options, resolver, &sink);
        engine->start(source);
        std::lock_guard lock(sample_mutex);
        current_engine = engine.get();
      } catch (const std::exception& e) {
        return std::unexpected(fmt::format("cannot start the engine: {}", e.what()));
      }
      ++report.passes;
      DriveHooks hooks;
      hooks.drain_timeout_s = c.engine.drain_timeout.count();
      hooks.must_stop = [&] { return storage_thread->failure().has_value(); };
      // A lock another process holds is waited out, but not past a drain: the stop must
      // end within systemd's TimeoutStopSec, not when the lock is released.
      hooks.on_drain = [&] { storage_thread->begin_drain(); };
      hooks.on_tick = [&] {
        engine::DeliverySnapshot now = total;
        now.add(engine->snapshot());
        meter.update(Clock::now(), counts_of(now, taken + engine->recipients_taken()));
      };
      interrupted = drive_engine(*engine, signals, console, hooks, interrupted) || interrupted;
      pass_counts = engine->snapshot();
      report.engine_failure = engine->failure();
      taken += engine->recipients_taken();
      std::lock_guard lock(sample_mutex);
      finished_passes.add(pass_counts);
      finished_taken += engine->recipients_taken();
      current_engine = nullptr;
    }
    total.add(pass_counts);
    source.release_unsent();
    if (auto ok = storage_thread->flush(); !ok) {
      report.storage_error = ok.error();
      break;
    }
    if (interrupted || report.engine_failure) break;
    auto next_due = storage_thread->next_due_at();
    if (!next_due) {
      report.storage_error = next_due.error();
      break;
    }
    const int64_t now = storage::unix_now_ms();
    if (*next_due && **next_due <= now) continue;  // retries already due: another pass
    if (options.until_done && *next_due && storage_thread->parked_work_pending()) {
      // Parked work is not done, even for --until-done: it waits only for its destination's
      // backlog to go down, so wait for it and go on. (The service below sleeps until the
      // next due time anyway.)
      if (signals.wait(std::chrono::milliseconds(std::max<int64_t>(**next_due - now, 1))) != 0) {
        interrupted = true;
        break;
      }
      continue;
    }
    if (options.until_done) break;
    // The long-running service: sleep until the next attempt is due (bounded, so work
    // enqueued meanwhile by another process is picked up), waking for a signal.
    int64_t wait_ms = static_cast<int64_t>(c.storage.idle_poll.count() * 1000);
    if (*next_due) wait_ms = std::min(wait_ms, **next_due - now);
    if (signals.wait(std::chrono::milliseconds(std::max<int64_t>(wait_ms, 1))) != 0) {
      interrupted = true;
      break;
    }
  }
  const Clock::time_point end = Clock::now();
  meter.finish(end, counts_of(total, taken));
  // Everything is committed; the thread stays (idle) until the exporter has stopped.
  if (auto ok = storage_thread->flush(); !ok && !report.storage_error)
    report.storage_error = ok.error();
  report.stats = storage_thread->stats();

  // A fresh connection for the end: forget this run and read where everything stands.
  if (auto after = storage::QueueStore::open(c.storage, storage::OpenMode::kReadWriteExisting)) {
    if (!report.storage_error) (void)after->unregister_run(*owner);
    if (auto s = after->state_counts(options.only_message)) report.states = std::move(*s);
  }

  RunResult& result = report.result;
  result.delivery = total;
  result.taken = taken;
  result.rejected = options.rejected_lines;
  result.source_exhausted = true;
  result.interrupted = interrupted;
  result.elapsed_s = std::chrono::duration<double>(end - start).count();

  // Every outcome line is written before the summary says the run is over.
  if (observability.outcome_log) observability.outcome_log->flush();
  print_queue_run(report, options.summary, options.quiet);
  if (options.linger && observability.serving_metrics() && c.metrics.linger.count() > 0 &&
      !interrupted) {
    // The final counts stay scrapeable for a while; a signal ends the wait.
    signals.wait(std::chrono::duration_cast<std::chrono::milliseconds>(c.metrics.linger));
  }
  return report;
}

namespace {

void print_queue_run(const QueueRunReport& report, SummaryFormat format, bool quiet) {
  const auto& states = report.states;
  if (format == SummaryFormat::kJson) {
    auto j = nlohmann::json::parse(format_summary_json(report.result));
    j["passes"] = report.passes;
    j["recovered"] = report.recovered;
    j["committed_outcomes"] = report.stats.outcomes_applied;
    j["commits"] = report.stats.commits;
    nlohmann::json by_state = nlohmann::json::object();
    for (storage::RecipientState s : storage::kAllStates) by_state[std::string(to_string(s))] = 0;
    for (auto& [s, n] : states) by_state[std::string(to_string(s))] = n;
    j["states"] = by_state;
    if (report.storage_error) j["storage_error"] = report.storage_error->message;
    if (report.engine_failure) j["engine_failure"] = *report.engine_failure;
    std::cout << j.dump() << std::endl;
  }
  if (!quiet) {
    std::ostream& out = format == SummaryFormat::kJson ? std::cerr : std::cout;
    out << format_summary_text(report.result);
    std::string line = "database:";
    for (auto& [s, n] : states) line += fmt::format(" {} {}", to_string(s), group_thousands(n));
    out << line << fmt::format(" ({}, {})\n", counted(report.passes, "pass", "passes"),
                                   counted(report.stats.commits, "commit", "commits"))
        << std::flush;
  }
  if (report.storage_error) {
    std::cerr << fmt::format(
        "ringmail: database error, stopped taking work: {}{}; recipients in flight stay leased "
        "and are queued again by the next run\n",
        report.storage_error->message, storage_error_hint(*report.storage_error));
  }
  if (report.engine_failure) {
    std::cerr << fmt::format(
        "ringmail: the engine failed and stopped the run: {}; the recipients it did not "
        "attempt are queued again for the next run\n",
        *report.engine_failure);
  }
}

}  // namespace

}  // namespace ringmail::app

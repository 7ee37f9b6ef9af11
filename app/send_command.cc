#include "app/send_command.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include "app/campaign_enqueue.h"
#include "app/console.h"
#include "app/human_format.h"
#include "app/queue_runner.h"
#include "app/progress.h"
#include "app/recipients_job_source.h"
#include "app/send_plan.h"
#include "app/summary.h"
#include "engine/engine.h"
#include "metrics/delivery_collector.h"
#include "metrics/exporter.h"
#include "metrics/outcome_log.h"
#include "app/engine_driver.h"
#include "app/observability.h"

namespace ringmail::app {
namespace {

using Clock = std::chrono::steady_clock;



// Enqueue into the database, then deliver from it until nothing is due now: a crash or
// kill -9 loses nothing, and `ringmail run` picks up what is left.
int send_through_database(const SendFlags& flags, SendPlan& plan) {
  StopSignals signals;  // before any thread exists, so every thread inherits the mask
  // Started before the enqueue: a metrics address that cannot be bound or a log that cannot
  // be opened stops the command while nothing is in the database yet.
  auto observability = start_observability(plan.config);
  if (!observability) {
    std::cerr << "ringmail: " << observability.error() << '\n';
    return 2;
  }
  reopen_log_on_hangup(signals, *observability);
  Console console(std::cerr, false);
  const std::string& db = plan.config.storage.path;
  const Clock::time_point enqueue_start = Clock::now();
  storage::EnqueueRequest request{flags.campaign, plan.config.from, *plan.body,
                                  storage::unix_now_ms(), std::nullopt};
  // A signal while the file is read rolls the enqueue back: nothing was accepted, so
  // nothing is left for a later run to send behind the operator's back.
  auto enqueued = enqueue_campaign(plan.config.storage, request, plan.recipients, console,
                                   [&] { return signals.wait(std::chrono::milliseconds(0)) != 0; });
  if (!enqueued) {
    std::cerr << "ringmail: " << enqueued.error() << '\n';
    return 2;
  }
  if (enqueued->interrupted) {
    std::cerr << "ringmail: interrupted while enqueueing: nothing was enqueued or sent\n";
    return 1;
  }
  const storage::EnqueueCounts& counts = enqueued->counts;
  if (!flags.quiet)
    console.print_line(fmt::format("ringmail: {} recipients enqueued into {} in {:.2f}s",
                                   group_thousands(counts.queued), db,
                                   std::chrono::duration<double>(Clock::now() - enqueue_start).count()));
  if (!flags.quiet && counts.suppressed > 0)
    console.print_line(fmt::format("ringmail: {} recipients are on the suppression list of {}: "
                                   "not sent",
                                   group_thousands(counts.suppressed), db));

  QueueRunOptions options;
  options.until_done = true;
  options.quiet = flags.quiet;
  options.expected_recipients = counts.queued;
  options.rejected_lines = enqueued->rejected_lines;
  options.summary = flags.summary;
  options.linger = true;
  options.only_message = counts.message_id;
  auto report = deliver_queue(plan.config, *plan.resolver, signals, *observability, options);
  if (!report) {
    std::cerr << fmt::format("ringmail: {}; the recipients are enqueued in {}: `ringmail run "
                             "--db {}` sends them\n",
                             report.error(), db, db);
    return 2;
  }
  if (report->storage_error || report->engine_failure) return 3;
  // Judged by where this send's recipients stand in the database, not by the engine's
  // attempts: a recipient deferred and then delivered in a later pass counts as delivered.
  uint64_t waiting = 0;  // not final: sent by a later `ringmail run`
  // (enqueue_campaign refuses a file with no accepted recipient, so states are never empty
  // when the run could read them.)
  bool all_delivered = enqueued->rejected_lines == 0 && !report->result.interrupted &&
                       !report->states.empty();
  for (auto& [state, n] : report->states) {
    if (!storage::is_final(state)) waiting += n;
    if (state != storage::RecipientState::kDelivered && n > 0) all_delivered = false;
  }
  if (waiting > 0 && !flags.quiet)
    std::cerr << fmt::format("ringmail: {} recipients of this send wait in {} (deferred or not "
                             "yet sent): `ringmail run --db {}` continues\n",
                             group_thousands(waiting), db, db);
  return all_delivered ? 0 : 1;
}

// The whole file goes through memory only: the fastest path, for benchmarks and runs
// that may be lost.
int send_from_memory(const SendFlags& flags, SendPlan& plan) {
  // SIGINT/SIGTERM become a drain instead of killing the process mid-transaction.
  StopSignals signals;  // before any thread exists, so every thread inherits the mask

  const ProgressStyle style =
      resolve_progress_style(plan.config.progress.mode, isatty(STDERR_FILENO) == 1);
  Console console(std::cerr, style == ProgressStyle::kBar,
                  style == ProgressStyle::kBar ? terminal_width() : 0);
  RecipientsJobSource source(std::move(plan.recipients), plan.config.from, plan.body, console);
  engine::RouteResolver& resolver = *plan.resolver;

  // Declared before the engine, so destroyed after it: the engine joins its shards before
  // the logger they write to goes.
  auto observability = start_observability(plan.config);
  if (!observability) {
    std::cerr << "ringmail: " << observability.error() << '\n';
    return 2;
  }
  reopen_log_on_hangup(signals, *observability);
  std::unique_ptr<metrics::OutcomeLogger>& outcome_log = observability->outcome_log;
  const MetricsSettings& metrics_settings = plan.config.metrics;
  std::unique_ptr<engine::Engine> engine;
  // Declared after the engine, so destroyed before it: no scrape reads a gone engine.
  StopExporterFirst stop_exporter_first{*observability};

  const Clock::time_point start = Clock::now();
  try {
    engine = std::make_unique<engine::Engine>(plan.config.engine, resolver, outcome_log.get());
    engine->start(source);
  } catch (const std::exception& e) {
    std::cerr << "ringmail: cannot start the engine: " << e.what() << '\n';
    return 2;
  }
  // Registered only now: Engine::snapshot() may be called from any thread once start()
  // has returned, not before.
  observability->expose([&engine] {
    return metrics::EngineSample{engine->snapshot(), engine->recipients_taken(), engine->shard_count()};
  });

  ProgressMeter meter(console, style, plan.config.progress.plain_interval, start);
  auto counts_now = [&] {
    return make_progress_counts(engine->snapshot(), source.rejected(), source.accepted(),
                                source.exhausted(), plan.estimated_total.value_or(0));
  };
  DriveHooks hooks;
  hooks.drain_timeout_s = plan.config.engine.drain_timeout.count();
  hooks.on_tick = [&] { meter.update(Clock::now(), counts_now()); };
  // engine->wait_for wakes the moment the run ends, so elapsed time is not padded by a tick.
  const bool interrupted = drive_engine(*engine, signals, console, hooks);
  const Clock::time_point end = Clock::now();
  meter.finish(end, counts_now());

  RunResult result;
  result.delivery = engine->snapshot();
  result.taken = engine->recipients_taken();
  result.source_exhausted = source.exhausted();
  result.interrupted = interrupted;
  const std::optional<std::string> engine_failure = engine->failure();
  // After a drain, every address still in the file is counted as not attempted, so the
  // summary accounts for every line. The engine has joined its feeder, so reading the
  // source here races with nothing.
  if (interrupted || engine_failure)
    while (source.next()) ++result.unread;
  result.rejected = source.rejected();
  result.elapsed_s = std::chrono::duration<double>(end - start).count();

  // Every outcome line is written before the summary says the run is over.
  if (outcome_log) outcome_log->flush();
  if (engine_failure)
    std::cerr << "ringmail: the engine failed and stopped the run: " << *engine_failure << '\n';
  if (flags.summary == SummaryFormat::kJson) {
    auto j = nlohmann::json::parse(format_summary_json(result));
    if (engine_failure) j["engine_failure"] = *engine_failure;
    std::cout << j.dump() << std::endl;
    if (!flags.quiet) std::cerr << format_summary_text(result);
  } else if (!flags.quiet) {
    std::cout << format_summary_text(result) << std::flush;
  }
  if (observability->serving_metrics() && metrics_settings.linger.count() > 0 && !interrupted) {
    // The final counts stay scrapeable for a while; a signal ends the wait.
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(metrics_settings.linger);
    const timespec linger{time_t(ns.count() / 1'000'000'000), long(ns.count() % 1'000'000'000)};
    sigtimedwait(&signals.set(), nullptr, &linger);
  }
  if (engine_failure) return 3;
  return exit_status(result);
}

}  // namespace

int run_send(const SendFlags& flags) {
  auto plan = prepare_send(flags);
  if (!plan) {
    std::cerr << "ringmail: " << plan.error() << '\n';
    return 2;
  }
  // Both paths refuse a file with nothing to send, as `enqueue` does, before a database,
  // a metrics port or a log is opened.
  if (plan->recipients.has_no_records()) {
    std::cerr << "ringmail: no recipients in " << flags.recipients_path << '\n';
    return 2;
  }
  return flags.no_db ? send_from_memory(flags, *plan) : send_through_database(flags, *plan);
}

}  // namespace ringmail::app

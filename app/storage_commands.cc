#include "app/storage_commands.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>

#include "app/config.h"
#include "app/console.h"
#include "app/engine_driver.h"
#include "app/observability.h"
#include "app/routing.h"
#include "app/human_format.h"
#include "app/mailbox.h"
#include "app/message_file.h"
#include "app/progress.h"
#include "app/recipients_file.h"
#include "app/relay.h"
#include "app/rfc3339.h"
#include "app/send_plan.h"
#include "app/summary.h"
#include "engine/engine.h"
#include "storage/database_job_source.h"
#include "storage/queue_store.h"
#include "storage/storage_thread.h"

namespace ringmail::app {
namespace {

using Clock = std::chrono::steady_clock;

std::expected<Config, std::string> load_config(const std::optional<std::string>& path,
                                               const std::optional<std::string>& db) {
  Config config;
  if (path) {
    auto loaded = load_config_file(*path);
    if (!loaded) return std::unexpected(loaded.error());
    config = std::move(*loaded);
  }
  if (db) config.storage.path = *db;
  return config;
}

int fail(std::string_view message, int status = 2) {
  std::cerr << "ringmail: " << message << '\n';
  return status;
}

size_t terminal_width() {
  winsize ws{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}

std::string disk_hint(const storage::StorageError& e) {
  return e.disk_full() ? " (the disk or the file size limit is full; free space and run again)"
                       : "";
}

}  // namespace

// ---------------------------------------------------------------- enqueue

int run_enqueue(const EnqueueFlags& flags) {
  auto config = load_config(flags.config_path, flags.db);
  if (!config) return fail(config.error());
  if (flags.from) config->from = *flags.from;
  if (flags.helo) config->engine.helo_name = *flags.helo;
  if (config->from.empty()) return fail("no sender: give --from ADDRESS or set [send] from");
  if (auto ok = validate_mailbox(config->from); !ok)
    return fail(fmt::format("invalid sender address: {}", ok.error()));
  int64_t now = storage::unix_now_ms();
  int64_t due = now;
  if (flags.send_at) {
    auto at = parse_rfc3339_ms(*flags.send_at);
    if (!at) return fail(at.error());
    due = *at;
  }
  auto body = load_message_file(flags.message_path, message_id_domain(*config));
  if (!body) return fail(body.error());
  auto recipients = RecipientsFile::open(flags.recipients_path);
  if (!recipients) return fail(recipients.error());

  auto store = storage::QueueStore::open(config->storage, storage::OpenMode::kReadWriteCreate);
  if (!store) return fail(store.error().message);
  storage::EnqueueRequest request{flags.campaign, config->from, **body, due,
                                  flags.idempotency_key};
  auto counts = store->begin_enqueue(request, now);
  if (!counts) return fail(counts.error().message + disk_hint(counts.error()));
  if (counts->duplicate) {
    store->abort_enqueue();
    if (!flags.quiet)
      std::cerr << fmt::format("ringmail: idempotency key '{}' already enqueued (message {}): "
                               "nothing added\n",
                               *flags.idempotency_key, counts->message_id);
    return 0;
  }
  Console console(std::cerr, false);
  uint64_t rejected = 0;
  constexpr uint64_t kMaxReported = 20;
  while (auto record = recipients->next()) {
    if (!record->has_value()) {
      if (++rejected <= kMaxReported) console.print_line(record->error().to_string());
      continue;
    }
    const Recipient& r = **record;
    if (auto ok = store->add_recipient(*counts, r.address, r.domain, due, now); !ok) {
      store->abort_enqueue();
      return fail(ok.error().message + disk_hint(ok.error()) + "; nothing was enqueued");
    }
  }
  if (rejected > kMaxReported)
    console.print_line(fmt::format("{}: ... {} more refused lines", flags.recipients_path,
                                   group_thousands(rejected - kMaxReported)));
  if (auto ok = store->finish_enqueue(); !ok)
    return fail(ok.error().message + disk_hint(ok.error()) + "; nothing was enqueued");
  if (!flags.quiet) {
    std::cerr << fmt::format(
        "ringmail: enqueued {} recipients as message {} of campaign '{}', due {}{}{}\n",
        group_thousands(counts->queued), counts->message_id, flags.campaign, format_rfc3339(due),
        counts->suppressed ? fmt::format(", {} suppressed", group_thousands(counts->suppressed))
                           : "",
        rejected ? fmt::format(", {} refused lines", group_thousands(rejected)) : "");
  }
  return 0;
}

// ---------------------------------------------------------------- run

int run_run(const RunFlags& flags) {
  auto config = load_config(flags.config_path, flags.db);
  if (!config) return fail(config.error());
  Config& c = *config;
  if (flags.relay) c.relay = *flags.relay;
  if (flags.helo) c.engine.helo_name = *flags.helo;
  if (flags.connections) c.engine.pool.max_connections = *flags.connections;
  if (flags.recipients_per_transaction)
    c.engine.pool.max_recipients_per_transaction = *flags.recipients_per_transaction;
  if (flags.shards) c.engine.shards = *flags.shards;
  if (flags.drain_timeout_s) c.engine.drain_timeout = engine::Seconds(*flags.drain_timeout_s);
  if (flags.quiet) c.progress.mode = ProgressMode::kOff;
  apply_security_flags(flags.security, c);
  apply_observability_flags(flags.observability, c);
  apply_routing_flags(flags.routing, c);
  if (auto ok = resolve_credentials(c); !ok) return fail(ok.error());

  if (auto ok = validate_domain(c.engine.helo_name); !ok)
    return fail(fmt::format("invalid EHLO name: {}", ok.error()));
  // Without a relay, domains go to their MX ([routes] can still name relays per domain).
  auto route_resolver = make_route_resolver(c);  // routes' profiles start from the defaults
  if (!route_resolver) return fail(route_resolver.error());
  keep_credentials_out_of_core_dumps(c);

  StopSignals signals;  // before any thread exists

  auto store = storage::QueueStore::open(c.storage, storage::OpenMode::kReadWriteExisting);
  if (!store) return fail(store.error().message);
  const int64_t started_ms = storage::unix_now_ms();
  auto recovered = store->recover_leases(started_ms);
  if (!recovered) return fail(recovered.error().message + disk_hint(recovered.error()));
  auto suppressed = store->apply_suppressions(started_ms);
  if (!suppressed) return fail(suppressed.error().message + disk_hint(suppressed.error()));
  auto owner = store->register_run(started_ms);
  if (!owner) return fail(owner.error().message + disk_hint(owner.error()));

  const ProgressStyle style = resolve_progress_style(c.progress.mode, isatty(STDERR_FILENO) == 1);
  Console console(std::cerr, style == ProgressStyle::kBar,
                  style == ProgressStyle::kBar ? terminal_width() : 0);
  if (*recovered > 0 && style != ProgressStyle::kOff)
    console.print_line(fmt::format("ringmail: {} recipients in flight in a run that is gone are "
                                   "queued again",
                                   group_thousands(*recovered)));

  engine::RouteResolver& resolver = **route_resolver;
  auto storage_thread =
      std::make_unique<storage::StorageThread>(std::move(*store), *owner, c.storage, c.retry);
  auto observability = start_observability(c);
  if (!observability) return fail(observability.error());
  FanOutSink sink(storage_thread.get(), observability->outcome_log.get());
  // Each pass has its own engine; a scrape sees the passes before it plus the current one.
  std::mutex sample_mutex;
  engine::DeliverySnapshot finished_passes;
  uint64_t finished_taken = 0;
  engine::Engine* current_engine = nullptr;
  observability->expose([&]() {
    std::lock_guard lock(sample_mutex);
    metrics::EngineSample sample{finished_passes, finished_taken, 0};
    if (current_engine) {
      sample.delivery.add(current_engine->snapshot());
      sample.recipients_taken += current_engine->recipients_taken();
      sample.shards = current_engine->shard_count();
    }
    return sample;
  });
  StopExporterFirst stop_exporter_first{observability->exporter};
  const Clock::time_point start = Clock::now();
  ProgressMeter meter(console, style, c.progress.plain_interval, start);
  engine::DeliverySnapshot total;
  uint64_t passes = 0, taken = 0;
  bool interrupted = false;
  std::optional<storage::StorageError> storage_error;
  auto counts_of = [&](const engine::DeliverySnapshot& s) {
    return make_progress_counts(s, 0, taken, false, 0);
  };

  while (true) {
    storage::DatabaseJobSource source(*storage_thread, c.storage.claim_batch);
    engine::DeliverySnapshot pass_counts;
    {
      std::unique_ptr<engine::Engine> engine;
      try {
        engine = std::make_unique<engine::Engine>(c.engine, resolver, &sink);
        engine->start(source);
        std::lock_guard lock(sample_mutex);
        current_engine = engine.get();
      } catch (const std::exception& e) {
        return fail(fmt::format("cannot start the engine: {}", e.what()));
      }
      ++passes;
      DriveHooks hooks;
      hooks.drain_timeout_s = c.engine.drain_timeout.count();
      hooks.must_stop = [&] { return storage_thread->failure().has_value(); };
      hooks.on_tick = [&] {
        engine::DeliverySnapshot now = total;
        now.add(engine->snapshot());
        meter.update(Clock::now(), counts_of(now));
      };
      interrupted = drive_engine(*engine, signals, console, hooks, interrupted) || interrupted;
      pass_counts = engine->snapshot();
      taken += engine->recipients_taken();
      std::lock_guard lock(sample_mutex);
      finished_passes.add(pass_counts);
      finished_taken += engine->recipients_taken();
      current_engine = nullptr;
    }
    total.add(pass_counts);
    source.release_unsent();
    if (auto ok = storage_thread->flush(); !ok) {
      storage_error = ok.error();
      break;
    }
    if (interrupted) break;
    auto next_due = storage_thread->next_due_at();
    if (!next_due) {
      storage_error = next_due.error();
      break;
    }
    const int64_t now = storage::unix_now_ms();
    if (*next_due && **next_due <= now) continue;  // retries already due: another pass
    if (flags.until_done) break;
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
  meter.finish(end, counts_of(total));
  const storage::StorageStats stats = storage_thread->stats();
  storage_thread.reset();  // commits what is left and closes the write connection

  // A fresh connection for the end: forget this run and read where everything stands.
  std::vector<std::pair<storage::RecipientState, uint64_t>> states;
  if (auto after = storage::QueueStore::open(c.storage, storage::OpenMode::kReadWriteExisting)) {
    if (!storage_error) (void)after->unregister_run(*owner);
    if (auto s = after->state_counts()) states = std::move(*s);
  }

  RunResult result;
  result.delivery = total;
  result.taken = taken;
  result.source_exhausted = true;
  result.interrupted = interrupted;
  result.elapsed_s = std::chrono::duration<double>(end - start).count();
  if (flags.summary == SummaryFormat::kJson) {
    auto j = nlohmann::json::parse(format_summary_json(result));
    j["passes"] = passes;
    j["recovered"] = *recovered;
    j["committed_outcomes"] = stats.outcomes_applied;
    j["commits"] = stats.commits;
    nlohmann::json by_state = nlohmann::json::object();
    for (storage::RecipientState s : storage::kAllStates) by_state[std::string(to_string(s))] = 0;
    for (auto& [s, n] : states) by_state[std::string(to_string(s))] = n;
    j["states"] = by_state;
    if (storage_error) j["storage_error"] = storage_error->message;
    std::cout << j.dump() << std::endl;
  }
  if (!flags.quiet && flags.summary != SummaryFormat::kJson) {
    std::cout << format_summary_text(result);
    std::string line = "database:";
    for (auto& [s, n] : states) line += fmt::format(" {} {}", to_string(s), group_thousands(n));
    std::cout << line << fmt::format(" ({} passes, {} commits)\n", passes, stats.commits)
              << std::flush;
  }
  if (storage_error) {
    return fail(fmt::format("database error, stopped taking work: {}{}; recipients in flight "
                            "stay leased and are queued again by the next run",
                            storage_error->message, disk_hint(*storage_error)),
                3);
  }
  return interrupted ? 1 : 0;
}

// ---------------------------------------------------------------- status

int run_status(const StatusFlags& flags) {
  auto config = load_config(flags.config_path, flags.db);
  if (!config) return fail(config.error());
  auto store = storage::QueueStore::open(config->storage, storage::OpenMode::kReadWriteExisting);
  if (!store) return fail(store.error().message);
  auto report = store->status(flags.campaign);
  if (!report) return fail(report.error().message);

  auto group = [](const std::vector<storage::StateCount>& rows) {
    std::map<std::string, std::map<std::string, uint64_t>> out;
    for (auto& r : rows) out[r.group][std::string(to_string(r.state))] += r.count;
    return out;
  };
  const auto campaigns = group(report->by_campaign);
  const auto domains = group(report->by_domain);
  if (flags.json) {
    nlohmann::json j;
    auto table = [](const std::map<std::string, std::map<std::string, uint64_t>>& m) {
      nlohmann::json t = nlohmann::json::object();
      for (auto& [name, states] : m) {
        nlohmann::json row;
        uint64_t total = 0;
        for (storage::RecipientState s : storage::kAllStates) {
          auto it = states.find(std::string(to_string(s)));
          uint64_t n = it == states.end() ? 0 : it->second;
          row[std::string(to_string(s))] = n;
          total += n;
        }
        row["total"] = total;
        t[name] = row;
      }
      return t;
    };
    j["campaigns"] = table(campaigns);
    j["domains"] = table(domains);
    if (report->oldest_deferred) {
      const auto& o = *report->oldest_deferred;
      j["oldest_deferred"] = {{"address", o.address},
                              {"campaign", o.campaign},
                              {"first_due_at", format_rfc3339(o.first_due_at_ms)},
                              {"next_attempt_at", format_rfc3339(o.next_attempt_at_ms)},
                              {"attempts", o.attempts},
                              {"last_code", o.last_code},
                              {"last_enhanced", o.last_enhanced},
                              {"last_text", o.last_text}};
    } else {
      j["oldest_deferred"] = nullptr;
    }
    nlohmann::json replies = nlohmann::json::array();
    for (auto& r : report->top_replies)
      replies.push_back({{"code", r.code}, {"enhanced", r.enhanced}, {"count", r.count}});
    j["top_replies"] = replies;
    std::cout << j.dump() << std::endl;
    return 0;
  }
  auto print = [](std::string_view title,
                  const std::map<std::string, std::map<std::string, uint64_t>>& m) {
    for (auto& [name, states] : m) {
      std::string line = fmt::format("{} {}:", title, name);
      uint64_t total = 0;
      for (storage::RecipientState s : storage::kAllStates) {
        auto it = states.find(std::string(to_string(s)));
        if (it == states.end()) continue;
        line += fmt::format(" {} {}", to_string(s), group_thousands(it->second));
        total += it->second;
      }
      std::cout << line << fmt::format(" (total {})\n", group_thousands(total));
    }
  };
  if (campaigns.empty()) std::cout << "no recipients\n";
  print("campaign", campaigns);
  print("domain", domains);
  if (report->oldest_deferred) {
    const auto& o = *report->oldest_deferred;
    std::cout << fmt::format(
        "oldest deferred: {} (campaign {}) first due {}, {} attempts, next {}, last reply {} {} "
        "{}\n",
        o.address, o.campaign, format_rfc3339(o.first_due_at_ms), o.attempts,
        format_rfc3339(o.next_attempt_at_ms), o.last_code, o.last_enhanced, o.last_text);
  }
  if (!report->top_replies.empty()) {
    std::string line = "top replies:";
    for (auto& r : report->top_replies)
      line += fmt::format(" {}{}{} x{};", r.code, r.enhanced.empty() ? "" : " ", r.enhanced,
                          group_thousands(r.count));
    line.pop_back();
    std::cout << line << '\n';
  }
  return 0;
}

// ---------------------------------------------------------------- suppress

int run_suppress(const SuppressFlags& flags) {
  auto config = load_config(flags.config_path, flags.db);
  if (!config) return fail(config.error());
  auto store = storage::QueueStore::open(config->storage, storage::OpenMode::kReadWriteCreate);
  if (!store) return fail(store.error().message);
  const int64_t now = storage::unix_now_ms();
  switch (flags.action) {
    case SuppressAction::kList: {
      auto list = store->suppressions();
      if (!list) return fail(list.error().message);
      for (auto& s : *list)
        std::cout << s.address << '\t' << s.reason << '\t' << format_rfc3339(s.created_at_ms)
                  << '\n';
      return 0;
    }
    case SuppressAction::kAdd:
    case SuppressAction::kRemove: {
      for (const std::string& a : flags.addresses) {
        if (auto ok = validate_mailbox(a); !ok) return fail(fmt::format("'{}': {}", a, ok.error()));
      }
      if (auto ok = store->connection().begin(); !ok) return fail(ok.error().message);
      uint64_t changed = 0;
      for (const std::string& a : flags.addresses) {
        auto ok = flags.action == SuppressAction::kAdd ? store->suppress(a, flags.reason, now)
                                                       : store->unsuppress(a);
        if (!ok) {
          store->connection().rollback();
          return fail(ok.error().message + disk_hint(ok.error()));
        }
        changed += *ok ? 1 : 0;
      }
      if (auto ok = store->connection().commit(); !ok) return fail(ok.error().message);
      std::cerr << fmt::format("ringmail: {} {} address(es)\n",
                               flags.action == SuppressAction::kAdd ? "suppressed" : "removed",
                               changed);
      return 0;
    }
    case SuppressAction::kImport: {
      auto file = RecipientsFile::open(flags.file);
      if (!file) return fail(file.error());
      if (auto ok = store->connection().begin(); !ok) return fail(ok.error().message);
      uint64_t added = 0, rejected = 0;
      while (auto record = file->next()) {
        if (!record->has_value()) {
          if (++rejected <= 20) std::cerr << record->error().to_string() << '\n';
          continue;
        }
        auto ok = store->suppress((*record)->address, flags.reason, now);
        if (!ok) {
          store->connection().rollback();
          return fail(ok.error().message + disk_hint(ok.error()));
        }
        added += *ok ? 1 : 0;
      }
      if (auto ok = store->connection().commit(); !ok) return fail(ok.error().message);
      std::cerr << fmt::format("ringmail: {} addresses added to the suppression list{}\n",
                               group_thousands(added),
                               rejected ? fmt::format(" ({} refused lines)", rejected) : "");
      return rejected ? 1 : 0;
    }
  }
  return 2;
}

}  // namespace ringmail::app

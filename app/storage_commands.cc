#include "app/storage_commands.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>

#include "app/age.h"
#include "app/campaign_enqueue.h"
#include "app/config.h"
#include "app/queue_runner.h"
#include "app/console.h"
#include "app/routing.h"
#include "app/human_format.h"
#include "app/mailbox.h"
#include "app/observability.h"
#include "app/message_file.h"
#include "app/recipients_file.h"
#include "app/relay.h"
#include "app/rfc3339.h"
#include "app/send_plan.h"
#include "storage/queue_store.h"

namespace ringmail::app {
namespace {

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

std::string hint(const storage::StorageError& e) { return storage_error_hint(e); }

// The error, then what the operator can do about it.
int fail(const storage::StorageError& e) { return fail(e.message + hint(e)); }

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
  if (flags.idempotency_key && flags.idempotency_key->empty())
    return fail("--idempotency-key must not be empty");
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

  storage::EnqueueRequest request{flags.campaign, config->from, **body, due,
                                  flags.idempotency_key, flags.urgent};
  Console console(std::cerr, false);
  auto enqueued = enqueue_campaign(config->storage, request, *recipients, console);
  if (!enqueued) return fail(enqueued.error());
  const storage::EnqueueCounts& counts = enqueued->counts;
  if (counts.duplicate) {
    if (!flags.quiet)
      std::cerr << fmt::format("ringmail: idempotency key '{}' already enqueued (message {}): "
                               "nothing added\n",
                               *flags.idempotency_key, counts.message_id);
    return 0;
  }
  if (!flags.quiet) {
    const uint64_t rejected = enqueued->rejected_lines;
    std::cerr << fmt::format(
        "ringmail: enqueued {} recipients as message {} of campaign '{}', due {}{}{}\n",
        group_thousands(counts.queued), counts.message_id, flags.campaign, format_rfc3339(due),
        counts.suppressed ? fmt::format(", {} suppressed", group_thousands(counts.suppressed))
                          : "",
        rejected ? fmt::format(", {} refused lines", group_thousands(rejected)) : "");
  }
  return enqueued->rejected_lines > 0 ? 1 : 0;  // as `suppress import`: the rest is in
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
  if (auto warning = credentials_without_verify_warning(c))
    std::cerr << "ringmail: warning: " << *warning << '\n';

  StopSignals signals;  // before any thread exists
  auto observability = start_observability(c);
  if (!observability) return fail(observability.error());
  reopen_log_on_hangup(signals, *observability);
  QueueRunOptions options;
  options.until_done = flags.until_done;
  options.linger = flags.until_done;  // a service serves /metrics all along anyway
  options.quiet = flags.quiet;
  options.summary = flags.summary;
  auto report = deliver_queue(c, **route_resolver, signals, *observability, options);
  if (!report) return fail(report.error());
  if (report->storage_error || report->engine_failure) return 3;
  // A service (no --until-done) is stopped by a signal, and drained is how it should end:
  // 0, so `systemctl stop` does not leave the unit failed. --until-done cut short is 1.
  return report->result.interrupted && flags.until_done ? 1 : 0;
}

// ---------------------------------------------------------------- status

int run_status(const StatusFlags& flags) {
  auto config = load_config(flags.config_path, flags.db);
  if (!config) return fail(config.error());
  auto store = storage::QueueStore::open(config->storage, storage::OpenMode::kReadWriteExisting);
  if (!store) return fail(store.error());
  auto report = store->status(flags.campaign);
  if (!report) return fail(report.error());
  // When the queue (or the campaign asked about) next has work: a --send-at, or a retry.
  const std::optional<int64_t> next_due = report->next_due_at;

  using StateCounts = std::map<std::string, uint64_t>;  // state name -> recipients
  auto group = [](const std::vector<storage::StateCount>& rows) {
    std::map<std::string, StateCounts> out;
    for (auto& r : rows) out[r.group][std::string(to_string(r.state))] += r.count;
    return out;
  };
  auto count_of = [](const StateCounts& states, std::initializer_list<storage::RecipientState> of) {
    uint64_t n = 0;
    for (storage::RecipientState s : of) {
      auto it = states.find(std::string(to_string(s)));
      if (it != states.end()) n += it->second;
    }
    return n;
  };
  auto total_of = [](const StateCounts& states) {
    uint64_t n = 0;
    for (auto& [state, count] : states) n += count;
    return n;
  };
  const auto campaigns = group(report->by_campaign);
  const auto all_domains = group(report->by_domain);
  if (flags.campaign && campaigns.empty())
    return fail(fmt::format("no recipients of a campaign named '{}' in {}", *flags.campaign,
                            config->storage.path));
  // A big queue can hold 200,000 domains: name the `--domains N` with the most work left
  // (queued, in flight, deferred), then the most recipients, and sum the rest into one row.
  std::vector<std::pair<std::string, StateCounts>> domains;  // the shown ones, in that order
  StateCounts other_domains;
  uint64_t other_domain_count = 0;
  {
    struct RankedDomain {
      uint64_t unfinished, total;
      const std::string* name;
      const StateCounts* states;
    };
    std::vector<RankedDomain> order;
    order.reserve(all_domains.size());
    for (auto& [name, states] : all_domains) {
      const uint64_t unfinished = count_of(states, {storage::RecipientState::kQueued,
                                                    storage::RecipientState::kInFlight,
                                                    storage::RecipientState::kDeferred});
      order.push_back({unfinished, total_of(states), &name, &states});
    }
    const size_t shown =
        flags.domains == 0 ? order.size() : std::min<size_t>(flags.domains, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(shown),
                      order.end(), [](const RankedDomain& a, const RankedDomain& b) {
                        if (a.unfinished != b.unfinished) return a.unfinished > b.unfinished;
                        if (a.total != b.total) return a.total > b.total;
                        return *a.name < *b.name;
                      });
    for (size_t i = 0; i < order.size(); ++i) {
      if (i < shown) {
        domains.emplace_back(*order[i].name, *order[i].states);
        continue;
      }
      ++other_domain_count;
      for (auto& [state, n] : *order[i].states) other_domains[state] += n;
    }
  }
  if (flags.json) {
    nlohmann::json j;
    auto row_of = [](const StateCounts& states) {
      nlohmann::json row;
      uint64_t total = 0;
      for (storage::RecipientState s : storage::kAllStates) {
        auto it = states.find(std::string(to_string(s)));
        uint64_t n = it == states.end() ? 0 : it->second;
        row[std::string(to_string(s))] = n;
        total += n;
      }
      row["total"] = total;
      return row;
    };
    auto table = [&](const auto& m) {  // name -> its states, as a map or a ranked vector
      nlohmann::json t = nlohmann::json::object();
      for (auto& [name, states] : m) t[name] = row_of(states);
      return t;
    };
    j["campaigns"] = table(campaigns);
    j["domains"] = table(domains);
    j["other_domains"] = row_of(other_domains);
    j["other_domains"]["domains"] = other_domain_count;
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
    nlohmann::json paused = nlohmann::json::array();
    for (const storage::DestinationStatus& d : report->paused_destinations)
      paused.push_back({{"name", d.name},
                        {"state", "paused"},
                        {"paused_until", format_rfc3339(d.paused_until_ms)},
                        {"paused_until_ms", d.paused_until_ms},
                        {"failures", d.failures},
                        {"last_code", d.last_code},
                        {"last_enhanced", d.last_enhanced},
                        {"last_text", d.last_text},
                        {"updated_at", format_rfc3339(d.updated_at_ms)}});
    j["destinations"] = paused;
    // Two keys, so a script reading `next_due_at` never mistakes one campaign's time for
    // the whole queue's.
    j[flags.campaign ? "campaign_next_due_at" : "next_due_at"] =
        next_due ? nlohmann::json(format_rfc3339(*next_due)) : nlohmann::json();
    // A server's reply text is whatever bytes it sent: invalid UTF-8 becomes U+FFFD
    // rather than an exception (and exit 2) on the dump.
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    return 0;
  }
  // Every name and reply text goes through printable(): they come from servers and files,
  // and an ESC in one must not drive the operator's terminal.
  auto states_line = [&](const StateCounts& states) {
    std::string line;
    for (storage::RecipientState s : storage::kAllStates) {
      auto it = states.find(std::string(to_string(s)));
      if (it == states.end()) continue;
      line += fmt::format(" {} {}", to_string(s), group_thousands(it->second));
    }
    return line + fmt::format(" (total {})", group_thousands(total_of(states)));
  };
  auto reply = [](int code, const std::string& enhanced, const std::string& text) {
    std::string out = code == 0 ? "0 (local)" : std::to_string(code);
    // Appended piece by piece: `" " + printable(...)` trips GCC 12's -O3 -Wrestrict.
    for (const std::string* part : {&enhanced, &text}) {
      if (part->empty()) continue;
      out += ' ';
      out += printable(*part);
    }
    return out;
  };
  if (campaigns.empty()) std::cout << "no recipients\n";
  for (auto& [name, states] : campaigns)
    std::cout << fmt::format("campaign {}:{}\n", printable(name), states_line(states));
  for (auto& [name, states] : domains)
    std::cout << fmt::format("domain {}:{}\n", printable(name), states_line(states));
  if (other_domain_count > 0)
    std::cout << fmt::format("{}:{} (--domains 0 lists them all)\n",
                             counted(other_domain_count, "other domain", "other domains"),
                             states_line(other_domains));
  if (next_due)
    std::cout << fmt::format("next due: {}{}\n", format_rfc3339(*next_due),
                             flags.campaign
                                 ? fmt::format(" (campaign {})", printable(*flags.campaign))
                                 : "");
  if (report->oldest_deferred) {
    const auto& o = *report->oldest_deferred;
    std::cout << fmt::format(
        "oldest deferred: {} (campaign {}) first due {}, {}, next {}, last reply {}\n",
        printable(o.address), printable(o.campaign), format_rfc3339(o.first_due_at_ms),
        counted(static_cast<uint64_t>(std::max<int64_t>(o.attempts, 0)), "attempt", "attempts"),
        format_rfc3339(o.next_attempt_at_ms), reply(o.last_code, o.last_enhanced, o.last_text));
  }
  if (!report->top_replies.empty()) {
    std::string line = "top last replies:";
    for (auto& r : report->top_replies)
      line += fmt::format(" {} ({});", reply(r.code, r.enhanced, ""),
                          counted(r.count, "recipient", "recipients"));
    line.pop_back();
    std::cout << line << '\n';
  }
  for (const storage::DestinationStatus& d : report->paused_destinations)
    std::cout << fmt::format(
        "destination {}: paused until {} ({} since it was last up), last reply {}\n",
        printable(d.name), format_rfc3339(d.paused_until_ms),
        counted(static_cast<uint64_t>(std::max<int64_t>(d.failures, 0)), "failure", "failures"),
        reply(d.last_code, d.last_enhanced, d.last_text));
  return 0;
}

// ---------------------------------------------------------------- suppress

int run_suppress(const SuppressFlags& flags) {
  auto config = load_config(flags.config_path, flags.db);
  if (!config) return fail(config.error());
  auto store = storage::QueueStore::open(config->storage, storage::OpenMode::kReadWriteCreate);
  if (!store) return fail(store.error());
  const int64_t now = storage::unix_now_ms();
  switch (flags.action) {
    case SuppressAction::kList: {
      auto list = store->suppressions();
      if (!list) return fail(list.error());
      for (auto& s : *list)
        // The reason may be a server's reply text (a 5.1.1 bounce): shown escaped.
        std::cout << printable(s.address) << '\t' << printable(s.reason) << '\t'
                  << format_rfc3339(s.created_at_ms) << '\n';
      return 0;
    }
    case SuppressAction::kAdd:
    case SuppressAction::kRemove: {
      for (const std::string& a : flags.addresses) {
        if (auto ok = validate_mailbox(a); !ok) return fail(fmt::format("'{}': {}", a, ok.error()));
      }
      if (auto ok = store->connection().begin(); !ok) return fail(ok.error());
      uint64_t changed = 0;
      for (const std::string& a : flags.addresses) {
        auto ok = flags.action == SuppressAction::kAdd ? store->suppress(a, flags.reason, now)
                                                       : store->unsuppress(a);
        if (!ok) {
          store->connection().rollback();
          return fail(ok.error());
        }
        changed += *ok ? 1 : 0;
      }
      if (auto ok = store->connection().commit(); !ok) return fail(ok.error());
      std::cerr << fmt::format("ringmail: {} {} address(es)\n",
                               flags.action == SuppressAction::kAdd ? "suppressed" : "removed",
                               changed);
      return 0;
    }
    case SuppressAction::kImport: {
      auto file = RecipientsFile::open(flags.file);
      if (!file) return fail(file.error());
      if (auto ok = store->connection().begin(); !ok) return fail(ok.error());
      uint64_t added = 0, rejected = 0;
      while (auto record = file->next()) {
        if (!record->has_value()) {
          if (++rejected <= 20) std::cerr << record->error().to_string() << '\n';
          continue;
        }
        auto ok = store->suppress((*record)->address, flags.reason, now);
        if (!ok) {
          store->connection().rollback();
          return fail(ok.error());
        }
        added += *ok ? 1 : 0;
      }
      if (auto ok = store->connection().commit(); !ok) return fail(ok.error());
      std::cerr << fmt::format("ringmail: {} addresses added to the suppression list{}\n",
                               group_thousands(added),
                               rejected ? fmt::format(" ({} refused lines)", rejected) : "");
      return rejected ? 1 : 0;
    }
  }
  return 2;
}

// ---------------------------------------------------------------- purge

int run_purge(const PurgeFlags& flags) {
  auto config = load_config(flags.config_path, flags.db);
  if (!config) return fail(config.error());
  auto age = parse_age_ms(flags.older_than);
  if (!age) return fail(age.error());
  auto store = storage::QueueStore::open(config->storage, storage::OpenMode::kReadWriteExisting);
  if (!store) return fail(store.error());
  std::optional<int64_t> campaign;
  if (flags.campaign) {
    auto id = store->campaign_id(*flags.campaign);
    if (!id) return fail(id.error());
    if (!*id)
      return fail(fmt::format("no campaign named '{}' in {}", *flags.campaign,
                              config->storage.path));
    campaign = *id;
  }
  const int64_t before = storage::unix_now_ms() - *age;
  auto counts = store->purge_final(before, campaign, flags.dry_run);
  if (!counts) return fail(counts.error());
  std::string states;
  for (auto& [state, n] : counts->recipients)
    states += fmt::format("{}{} {}", states.empty() ? "" : ", ", to_string(state),
                          group_thousands(n));
  std::cout << fmt::format("{} {} recipients last changed before {}{}", flags.dry_run ? "would purge" : "purged",
                           group_thousands(counts->recipients_total()), format_rfc3339(before),
                           states.empty() ? "" : " (" + states + ")");
  if (!flags.dry_run)
    std::cout << fmt::format(", {} attempt log rows, {} message bodies",
                             group_thousands(counts->attempts), group_thousands(counts->bodies));
  std::cout << '\n';
  return 0;
}

}  // namespace ringmail::app

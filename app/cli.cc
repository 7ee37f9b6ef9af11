#include "app/cli.h"

#include <CLI/CLI.hpp>

#ifndef RINGMAIL_VERSION
#define RINGMAIL_VERSION "unknown"
#endif

namespace ringmail::app {
namespace {

void add_routing_options(CLI::App& command, RoutingFlags& flags) {
  command
      .add_option("--dns-server", flags.dns_servers,
                  "DNS server for MX lookups (repeatable); config: dns.servers, default "
                  "/etc/resolv.conf. Used for domains without --relay or a [routes] entry")
      ->type_name("HOST:PORT")
      ->check([](const std::string& s) {
        auto ok = validate_dns_server(s);
        return ok ? std::string() : ok.error();
      });
  command
      .add_option("--mx-port", flags.mx_port,
                  "SMTP port towards mail exchangers; config: dns.smtp_port, default 25")
      ->type_name("PORT")
      ->check(CLI::Range(1, 65535));
}

void add_security_options(CLI::App& command, SecurityFlags& flags) {
  command
      .add_option("--tls", flags.tls_mode,
                  "disabled | opportunistic (STARTTLS when offered) | required (defer without "
                  "TLS) | verify (also check the certificate chain and host name); config: "
                  "tls.mode, default opportunistic")
      ->type_name("MODE")
      ->check(CLI::IsMember({"disabled", "opportunistic", "required", "verify"}));
  command.add_flag("--tls-implicit", flags.tls_implicit,
                   "TLS from the first byte (port 465, RFC 8314) instead of STARTTLS; config: "
                   "tls.implicit");
  command
      .add_option("--tls-ca-file", flags.tls_ca_file,
                  "Trusted CA certificates (PEM); config: tls.ca_file, default the system store")
      ->type_name("FILE");
  command.add_option("--auth-user", flags.auth_user, "AUTH user name; config: auth.user")
      ->type_name("USER");
  command
      .add_option("--auth-password-env", flags.auth_password_env,
                  "Environment variable holding the AUTH password (never put it on the command "
                  "line); config: auth.password_env")
      ->type_name("VAR");
  command.add_flag("--auth-allow-plaintext", flags.auth_allow_plaintext,
                   "Allow AUTH over a connection without TLS; config: auth.allow_plaintext");
}

// A value given twice takes the last one, as a later flag overrides an earlier one in most
// tools: `scripts/demo --rcpt-per-txn 1` appends to the demo's own `--rcpt-per-txn 10`.
// Options that take many values (--dns-server, suppress's addresses) keep all of them.
void let_the_last_value_win(CLI::App& command) {
  for (CLI::Option* option : command.get_options()) {
    if (option->get_items_expected_max() <= 1)
      option->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
}

// --metrics-listen, --no-metrics, --metrics-linger, --log-file, --log-format.
void add_observability_options(CLI::App& command, ObservabilityFlags& flags) {
  command
      .add_option("--metrics-listen", flags.metrics_listen,
                  "Serve Prometheus metrics at http://ADDR:PORT/metrics (numeric IPv4:PORT, "
                  "e.g. 0.0.0.0:9464; port 0: any free port, printed on stderr at start); "
                  "config: metrics.listen, default 127.0.0.1:9464")
      ->type_name("ADDR:PORT");
  command.add_flag("--no-metrics", flags.no_metrics,
                   "Do not serve metrics; config: metrics.enabled");
  command
      .add_option("--metrics-linger", flags.metrics_linger_s,
                  "After the run, keep serving metrics this many seconds (SIGINT/SIGTERM ends "
                  "it early); config: metrics.linger, default 0")
      ->type_name("S")
      ->check(CLI::Range(0.0, Limits::kMaxSeconds).description(""));
  command
      .add_option("--log-file", flags.log_file,
                  "Write one structured line per recipient outcome to FILE (appended; - for "
                  "stderr); config: log.file, default off")
      ->type_name("FILE");
  command
      .add_option("--log-format", flags.log_format,
                  "Outcome log format: logfmt (default) or json (JSON Lines); config: log.format")
      ->type_name("logfmt|json")
      ->check(CLI::IsMember({"logfmt", "json"}).description(""));
}

}  // namespace

std::expected<SendFlags, int> parse_command_line(int argc, const char* const* argv,
                                                 std::ostream& out, std::ostream& err) {
  auto command = parse_command(argc, argv, out, err);
  if (!command) return std::unexpected(command.error());
  if (auto* send = std::get_if<SendFlags>(&*command)) return std::move(*send);
  err << "ringmail: expected the send command\n";
  return std::unexpected(2);
}

std::expected<Command, int> parse_command(int argc, const char* const* argv, std::ostream& out,
                                          std::ostream& err) {
  CLI::App app("ringmail: a high-throughput bulk SMTP sender", "ringmail");
  app.set_version_flag("--version", "ringmail " RINGMAIL_VERSION);
  app.require_subcommand(1);
  // Each command says its own exit status (CLI11 copies a parent's footer into every
  // subcommand made after it, so this one is set last, for `ringmail --help` alone).

  SendFlags flags;
  CLI::App* send = app.add_subcommand(
      "send", "Send one message to every recipient of a file, through a relay or to each domain's MX");
  send->footer(
      "Exit status: 0 every recipient delivered; 1 some were not (deferred, bounced, "
      "suppressed, refused lines) or interrupted; 2 usage, config or input error (nothing "
      "sent); 3 the database or the engine failed during the run (nothing accepted is lost).\n");
  send->add_option("--message", flags.message_path,
                   "RFC 5322 message file (.eml); Date: and Message-ID: are added if missing")
      ->required()
      ->type_name("FILE");
  send->add_option("--recipients", flags.recipients_path,
                   "Recipients: .txt (one address a line, # comments), .csv (an 'email' "
                   "column) or .jsonl/.ndjson (an \"email\" field); other names are sniffed")
      ->required()
      ->type_name("FILE");
  send->add_option("--relay", flags.relay,
                   "SMTP relay HOST:PORT or [IPv6]:PORT (port 25 when left out); without "
                   "one, each domain is delivered to its MX; config: send.relay")
      ->type_name("HOST:PORT");
  send->add_option("--from", flags.from, "Envelope sender (MAIL FROM) address; config: send.from")
      ->type_name("ADDR");
  send->add_option("--config", flags.config_path,
                   "TOML config file; flags given here override its values")
      ->type_name("FILE");
  send->add_option("--connections", flags.connections,
                   "Most connections to the relay (per shard owning it); "
                   "config: pool.max_connections, default 20")
      ->type_name("N")
      ->check(CLI::Range(1u, Limits::kMaxConnections).description(""));
  send->add_option("--rcpt-per-txn", flags.recipients_per_transaction,
                   "Most recipients in one SMTP transaction; "
                   "config: pool.max_recipients_per_transaction, default 100")
      ->type_name("N")
      ->check(CLI::Range(1u, Limits::kMaxRecipientsPerTransaction).description(""));
  send->add_option("--shards", flags.shards,
                   "Engine threads, one io_uring each; 0: one per core; "
                   "config: engine.shards, default 0")
      ->type_name("N")
      ->check(CLI::Range(0u, Limits::kMaxShards).description(""));
  send->add_option("--max-msgs-per-conn", flags.max_messages_per_connection,
                   "Messages on one connection before it is replaced; "
                   "config: pool.max_messages_per_connection, default 10000")
      ->type_name("N")
      ->check(CLI::Range(1u, Limits::kMaxMessagesPerConnection).description(""));
  send->add_option("--rate", flags.messages_per_second,
                   "Most messages (transactions) per second per destination (per shard "
                   "owning it), a burst of up to one second's worth allowed; 0: unlimited; "
                   "config: pool.messages_per_second, default 0")
      ->type_name("MSGS_PER_S")
      ->check(CLI::Range(0.0, Limits::kMaxRate).description(""));
  send->add_option("--helo", flags.helo,
                   "Name given in EHLO/HELO (also the Message-ID domain when it has a dot); "
                   "config: engine.helo_name, default localhost")
      ->type_name("NAME");
  send->add_option("--drain-timeout", flags.drain_timeout_s,
                   "Seconds transactions in flight may take to finish after SIGINT/SIGTERM; "
                   "config: engine.drain_timeout, default 30")
      ->type_name("S")
      ->check(CLI::Range(0.0, Limits::kMaxSeconds).description(""));
  send->add_flag("--no-pipelining", flags.no_pipelining,
                 "Do not use PIPELINING (RFC 2920) even when offered; config: engine.pipelining");
  std::string summary = "text";
  send->add_option("--summary", summary,
                   "Final summary: text (default), or json: one object on stdout, the text "
                   "going to stderr")
      ->type_name("json|text")
      ->check(CLI::IsMember({"text", "json"}).description(""));
  send->add_flag("--quiet", flags.quiet,
                 "No progress line and no text summary (errors, refused lines and --summary "
                 "json still print)");
  CLI::Option* send_db =
      send->add_option("--db", flags.db,
                       "SQLite database the recipients are enqueued into before they are sent "
                       "(created if missing); what is left (deferred, interrupted) is sent by "
                       "`ringmail run`; config: storage.path, default ringmail.db")
          ->type_name("PATH");
  send->add_flag("--no-db", flags.no_db,
                 "Send from memory: nothing is written to disk, and a crash loses what was "
                 "not yet sent (for benchmarks and throwaway runs)")
      ->excludes(send_db);
  send->add_option("--campaign", flags.campaign,
                   "Campaign name in the database (default: send)")
      ->type_name("NAME");
  add_observability_options(*send, flags.observability);
  add_security_options(*send, flags.security);
  add_routing_options(*send, flags.routing);

  // The durable path: enqueue into SQLite, run from it, report, suppress.
  EnqueueFlags enqueue_flags;
  CLI::App* enqueue = app.add_subcommand(
      "enqueue", "Store one message and its recipients in the database (durable on exit 0)");
  enqueue->footer(
      "Exit status: 0 every line enqueued, or the idempotency key was already used; 1 some "
      "lines refused (the others are enqueued); 2 usage, config or input error, or no "
      "recipient accepted (nothing enqueued).\n");
  enqueue->add_option("--db", enqueue_flags.db, "SQLite database (created if missing); "
                      "config: storage.path, default ringmail.db")->type_name("PATH");
  enqueue->add_option("--from", enqueue_flags.from, "Envelope sender; config: send.from")
      ->type_name("ADDR");
  enqueue->add_option("--message", enqueue_flags.message_path,
                      "RFC 5322 message file; Date: and Message-ID: are added if missing")
      ->required()->type_name("FILE");
  enqueue->add_option("--recipients", enqueue_flags.recipients_path,
                      "Recipients file (.txt, .csv with an email column, .jsonl)")
      ->required()->type_name("FILE");
  enqueue->add_option("--campaign", enqueue_flags.campaign,
                      "Campaign name the recipients are counted under (default: default)")
      ->type_name("NAME");
  enqueue->add_option("--send-at", enqueue_flags.send_at,
                      "Not before this time, RFC 3339 (2025-07-01T09:00:00Z or +02:00)")
      ->type_name("RFC3339");
  enqueue->add_option("--idempotency-key", enqueue_flags.idempotency_key,
                      "Enqueueing the same key again adds nothing")->type_name("KEY");
  enqueue->add_flag("--urgent", enqueue_flags.urgent,
                    "Send ahead of bulk work (receipts, password resets): claimed before "
                    "recipients due earlier, queued ahead of them at the destination, never "
                    "parked");
  enqueue->add_option("--helo", enqueue_flags.helo,
                      "Message-ID domain when it has a dot; config: engine.helo_name")
      ->type_name("NAME");
  enqueue->add_option("--config", enqueue_flags.config_path, "TOML config file")->type_name("FILE");
  enqueue->add_flag("--quiet", enqueue_flags.quiet, "Print only errors");

  RunFlags run_flags;
  CLI::App* run = app.add_subcommand(
      "run", "Deliver due recipients from the database; retry deferred ones when due");
  run->footer(
      "Exit status: 0 nothing due now (--until-done), or drained after SIGTERM/SIGINT (a "
      "service); 1 --until-done interrupted; 2 usage, config or start-up error (nothing "
      "sent); 3 the database or the engine failed during the run (nothing accepted is lost). "
      "A second signal exits at once with 128 + its number.\n");
  run->add_option("--db", run_flags.db, "SQLite database; config: storage.path")->type_name("PATH");
  run->add_option("--relay", run_flags.relay, "SMTP relay HOST:PORT; config: send.relay")
      ->type_name("HOST:PORT");
  run->add_option("--config", run_flags.config_path, "TOML config file")->type_name("FILE");
  run->add_flag("--until-done", run_flags.until_done,
                "Exit when nothing is due now (every recipient final or waiting for a later "
                "attempt); without it, run until SIGTERM");
  run->add_option("--connections", run_flags.connections, "config: pool.max_connections")
      ->type_name("N")->check(CLI::Range(1u, Limits::kMaxConnections).description(""));
  run->add_option("--rcpt-per-txn", run_flags.recipients_per_transaction,
                  "config: pool.max_recipients_per_transaction")
      ->type_name("N")->check(CLI::Range(1u, Limits::kMaxRecipientsPerTransaction).description(""));
  run->add_option("--shards", run_flags.shards, "config: engine.shards")
      ->type_name("N")->check(CLI::Range(0u, Limits::kMaxShards).description(""));
  run->add_option("--helo", run_flags.helo, "config: engine.helo_name")->type_name("NAME");
  add_security_options(*run, run_flags.security);
  add_observability_options(*run, run_flags.observability);
  add_routing_options(*run, run_flags.routing);
  run->add_option("--drain-timeout", run_flags.drain_timeout_s, "config: engine.drain_timeout")
      ->type_name("S")->check(CLI::Range(0.0, Limits::kMaxSeconds).description(""));
  std::string run_summary = "text";
  run->add_option("--summary", run_summary, "text (default) or json (one object on stdout)")
      ->type_name("json|text")->check(CLI::IsMember({"text", "json"}).description(""));
  run->add_flag("--quiet", run_flags.quiet, "No progress and no text summary");

  StatusFlags status_flags;
  CLI::App* status = app.add_subcommand(
      "status", "Counts per state per campaign and domain, oldest deferred, top replies");
  status->footer("Exit status: 0 printed; 2 usage, config or database error.\n");
  status->add_option("--db", status_flags.db, "SQLite database; config: storage.path")
      ->type_name("PATH");
  status->add_option("--campaign", status_flags.campaign, "Only this campaign")->type_name("NAME");
  status->add_flag("--json", status_flags.json, "One JSON object on stdout");
  status->add_option("--domains", status_flags.domains,
                     "Destination domains shown by name, most queued, in flight and deferred "
                     "first (then most recipients); the others are summed on one line "
                     "(\"other_domains\" in JSON); 0: all. Default 20")
      ->type_name("N");
  status->add_option("--config", status_flags.config_path, "TOML config file")->type_name("FILE");

  SuppressFlags suppress_flags;
  CLI::App* suppress =
      app.add_subcommand("suppress", "The suppression list: addresses that are never sent to");
  suppress->require_subcommand(1);
  suppress->footer(
      "Exit status: 0 done; 1 `import` refused some lines (the others are suppressed); 2 "
      "usage, config or database error.\n");
  suppress->add_option("--db", suppress_flags.db, "SQLite database; config: storage.path")
      ->type_name("PATH");
  suppress->add_option("--config", suppress_flags.config_path, "TOML config file")
      ->type_name("FILE");
  CLI::App* s_add = suppress->add_subcommand("add", "Suppress addresses");
  s_add->add_option("addresses", suppress_flags.addresses, "Addresses")->required();
  s_add->add_option("--reason", suppress_flags.reason, "Why (default: manual)");
  CLI::App* s_remove = suppress->add_subcommand("remove", "Take addresses off the list");
  s_remove->add_option("addresses", suppress_flags.addresses, "Addresses")->required();
  CLI::App* s_list = suppress->add_subcommand("list", "Print the list (address, reason)");
  CLI::App* s_import = suppress->add_subcommand("import", "Suppress every address of a file");
  s_import->add_option("file", suppress_flags.file, "Recipients file (.txt, .csv, .jsonl)")
      ->required();
  s_import->add_option("--reason", suppress_flags.reason, "Why (default: manual)");
  for (CLI::App* sub : {s_add, s_remove, s_list, s_import}) {
    sub->add_option("--db", suppress_flags.db, "SQLite database")->type_name("PATH");
    sub->add_option("--config", suppress_flags.config_path, "TOML config file")
        ->type_name("FILE");
  }

  PurgeFlags purge_flags;
  CLI::App* purge = app.add_subcommand(
      "purge", "Remove recipients whose outcome is final and older than an age, with their "
               "attempt log");
  purge->footer(
      "Removes delivered, bounced, expired and suppressed recipients last changed before "
      "the age; never a queued, deferred or in-flight one. A message left with no "
      "recipient keeps its idempotency key but not its body. Safe while `run` works on the "
      "same database.\nExit status: 0 done; 2 usage, config or database error.\n");
  purge->add_option("--db", purge_flags.db, "SQLite database; config: storage.path")
      ->type_name("PATH");
  purge->add_option("--older-than", purge_flags.older_than,
                    "Last changed at least this long ago: 90s, 30m, 12h, 30d")
      ->required()->type_name("AGE");
  purge->add_option("--campaign", purge_flags.campaign, "Only this campaign")->type_name("NAME");
  purge->add_flag("--dry-run", purge_flags.dry_run, "Count what would go; change nothing");
  purge->add_option("--config", purge_flags.config_path, "TOML config file")->type_name("FILE");

  for (CLI::App* command :
       {send, enqueue, run, status, suppress, s_add, s_remove, s_list, s_import, purge})
    let_the_last_value_win(*command);
  app.footer("`ringmail COMMAND --help` gives a command's options and exit status.\n");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    // `ringmail --help` shows the options of every subcommand, not only their names.
    if (app.get_subcommands().empty()) {
      out << app.help("", CLI::AppFormatMode::All);
      return std::unexpected(0);
    }
    return std::unexpected(app.exit(e, out, err));
  } catch (const CLI::ParseError& e) {
    int status = app.exit(e, out, err);
    return std::unexpected(status == 0 ? 0 : 2);
  }
  if (enqueue->parsed()) return enqueue_flags;
  if (run->parsed()) {
    run_flags.summary = run_summary == "json" ? SummaryFormat::kJson : SummaryFormat::kText;
    return run_flags;
  }
  if (status->parsed()) return status_flags;
  if (purge->parsed()) return purge_flags;
  if (suppress->parsed()) {
    suppress_flags.action = s_add->parsed()      ? SuppressAction::kAdd
                            : s_remove->parsed() ? SuppressAction::kRemove
                            : s_import->parsed() ? SuppressAction::kImport
                                                 : SuppressAction::kList;
    return suppress_flags;
  }
  flags.summary = summary == "json" ? SummaryFormat::kJson : SummaryFormat::kText;
  return flags;
}

void apply_flags(const SendFlags& flags, Config& config) {
  if (flags.relay) config.relay = *flags.relay;
  if (flags.from) config.from = *flags.from;
  if (flags.helo) config.engine.helo_name = *flags.helo;
  if (flags.connections) config.engine.pool.max_connections = *flags.connections;
  if (flags.recipients_per_transaction) {
    config.engine.pool.max_recipients_per_transaction = *flags.recipients_per_transaction;
  }
  if (flags.shards) config.engine.shards = *flags.shards;
  if (flags.max_messages_per_connection) {
    config.engine.pool.max_messages_per_connection = *flags.max_messages_per_connection;
  }
  if (flags.drain_timeout_s) config.engine.drain_timeout = engine::Seconds(*flags.drain_timeout_s);
  if (flags.messages_per_second)
    config.engine.pool.messages_per_second = *flags.messages_per_second;
  if (flags.no_pipelining) config.engine.pipelining = false;
  if (flags.quiet) config.progress.mode = ProgressMode::kOff;
  if (flags.db) config.storage.path = *flags.db;
  apply_observability_flags(flags.observability, config);
  apply_security_flags(flags.security, config);
  apply_routing_flags(flags.routing, config);
}

void apply_routing_flags(const RoutingFlags& flags, Config& config) {
  if (!flags.dns_servers.empty()) config.engine.mx.resolver.servers = flags.dns_servers;
  if (flags.mx_port) config.mx_port = uint16_t(*flags.mx_port);
}

void apply_security_flags(const SecurityFlags& flags, Config& config) {
  if (flags.tls_mode) config.engine.security.tls.mode = *parse_tls_mode(*flags.tls_mode);
  if (flags.tls_implicit) config.engine.security.implicit_tls = true;
  if (flags.tls_ca_file) config.engine.security.tls.ca_file = *flags.tls_ca_file;
  if (flags.auth_user) config.auth.user = *flags.auth_user;
  if (flags.auth_password_env) config.auth.password_env = *flags.auth_password_env;
  if (flags.auth_allow_plaintext) config.auth.allow_plaintext = true;
}

void apply_observability_flags(const ObservabilityFlags& flags, Config& config) {
  if (flags.metrics_listen) config.metrics.listen = *flags.metrics_listen;
  if (flags.no_metrics) config.metrics.enabled = false;
  if (flags.metrics_linger_s) config.metrics.linger = engine::Seconds(*flags.metrics_linger_s);
  if (flags.log_file) config.log.file = *flags.log_file;
  if (flags.log_format) {
    config.log.format = *flags.log_format == "json" ? OutcomeLogFormat::kJson
                                                     : OutcomeLogFormat::kLogfmt;
  }
}

}  // namespace ringmail::app

#include "app/cli.h"

#include <CLI/CLI.hpp>

#ifndef RINGMAIL_VERSION
#define RINGMAIL_VERSION "unknown"
#endif

namespace ringmail::app {

std::expected<SendFlags, int> parse_command_line(int argc, const char* const* argv,
                                                 std::ostream& out, std::ostream& err) {
  CLI::App app("ringmail: a high-throughput bulk SMTP sender", "ringmail");
  app.set_version_flag("--version", "ringmail " RINGMAIL_VERSION);
  app.require_subcommand(1);
  app.footer(
      "Exit status: 0 every recipient delivered; 1 some were not (deferred, bounced, refused "
      "lines, interrupted); 2 usage, config or start-up error.\n");

  SendFlags flags;
  CLI::App* send = app.add_subcommand(
      "send", "Send one message to every recipient of a file through one SMTP relay");
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
                   "SMTP relay HOST:PORT or [IPv6]:PORT (port 25 when left out); "
                   "config: send.relay")
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
                   "Most messages (transactions) per second; 0: unlimited; "
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
}

}  // namespace ringmail::app

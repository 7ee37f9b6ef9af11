// The `ringmail` command line: the options of `ringmail send` as given, and how they
// override the config file.
#pragma once

#include <expected>
#include <optional>
#include <ostream>
#include <string>
#include <variant>
#include <vector>

#include "app/config.h"

namespace ringmail::app {

enum class SummaryFormat { kText, kJson };

// Metrics endpoint and outcome log options, shared by every command that runs the engine.
struct ObservabilityFlags {
  std::optional<std::string> metrics_listen;
  bool no_metrics = false;
  std::optional<double> metrics_linger_s;
  std::optional<std::string> log_file;
  std::optional<std::string> log_format;  // "logfmt" | "json", checked by the parser
};

// --tls, --tls-implicit, --tls-ca-file, --auth-user, --auth-password-env,
// --auth-allow-plaintext: how the relay connection is protected (send and run).
struct SecurityFlags {
  std::optional<std::string> tls_mode;  // checked by the parser
  bool tls_implicit = false;
  std::optional<std::string> tls_ca_file;
  std::optional<std::string> auth_user;
  std::optional<std::string> auth_password_env;
  bool auth_allow_plaintext = false;
};

// --dns-server, --mx-port: how domains without a relay are routed by MX (send and run).
struct RoutingFlags {
  std::vector<std::string> dns_servers;  // "host:port"; replaces [dns] servers when given
  std::optional<unsigned> mx_port;
};

// Options left unset (nullopt) keep the config file's value or its default.
struct SendFlags {
  std::string message_path;
  std::string recipients_path;
  std::optional<std::string> config_path;
  std::optional<std::string> relay;
  std::optional<std::string> from;
  std::optional<std::string> helo;
  std::optional<unsigned> connections;
  std::optional<unsigned> recipients_per_transaction;
  std::optional<unsigned> shards;
  std::optional<unsigned> max_messages_per_connection;
  std::optional<double> drain_timeout_s;
  std::optional<double> messages_per_second;
  bool no_pipelining = false;
  bool quiet = false;
  SummaryFormat summary = SummaryFormat::kText;
  // Durable by default: the recipients are enqueued into this database (config:
  // storage.path) and sent from it. --no-db sends from memory and writes nothing.
  std::optional<std::string> db;
  bool no_db = false;
  std::string campaign = "send";
  ObservabilityFlags observability;
  SecurityFlags security;
  RoutingFlags routing;
};

// `ringmail enqueue`: one message and its recipients into the database, durably.
struct EnqueueFlags {
  std::optional<std::string> db;  // config: storage.path
  std::optional<std::string> config_path;
  std::optional<std::string> from;
  std::optional<std::string> helo;  // only for the Message-ID domain
  std::string message_path;
  std::string recipients_path;
  std::string campaign = "default";
  std::optional<std::string> send_at;  // RFC 3339
  std::optional<std::string> idempotency_key;
  bool urgent = false;  // claimed and queued ahead of bulk work
  bool quiet = false;
};

// `ringmail run`: deliver what is due from the database through the engine.
struct RunFlags {
  std::optional<std::string> db;
  std::optional<std::string> config_path;
  std::optional<std::string> relay;
  std::optional<std::string> helo;
  std::optional<unsigned> connections;
  std::optional<unsigned> recipients_per_transaction;
  std::optional<unsigned> shards;
  std::optional<double> drain_timeout_s;
  bool until_done = false;
  bool quiet = false;
  SummaryFormat summary = SummaryFormat::kText;
  SecurityFlags security;
  ObservabilityFlags observability;
  RoutingFlags routing;
};

struct StatusFlags {
  std::optional<std::string> db;
  std::optional<std::string> config_path;
  std::optional<std::string> campaign;
  bool json = false;
  // Destination domains listed by name, most unfinished (queued, in flight, deferred)
  // first; the rest are summed into one line. 0: every domain.
  unsigned domains = 20;
};

enum class SuppressAction { kAdd, kRemove, kList, kImport };

struct SuppressFlags {
  std::optional<std::string> db;
  std::optional<std::string> config_path;
  SuppressAction action = SuppressAction::kList;
  std::vector<std::string> addresses;  // add, remove
  std::string file;                    // import: a recipients file (.txt/.csv/.jsonl)
  std::string reason = "manual";
};

struct PurgeFlags {
  std::optional<std::string> db;
  std::optional<std::string> config_path;
  std::string older_than;  // an age (app/age.h)
  std::optional<std::string> campaign;
  bool dry_run = false;
};

using Command =
    std::variant<SendFlags, EnqueueFlags, RunFlags, StatusFlags, SuppressFlags, PurgeFlags>;

// Parses argv for any subcommand; like parse_command_line() otherwise.
std::expected<Command, int> parse_command(int argc, const char* const* argv, std::ostream& out,
                                          std::ostream& err);

// Parses argv. Returns the flags of `send`, or the exit status when the command line alone
// settles the run: 0 after --help or --version, 2 after a usage error (the message and
// help go to `out` / `err`).
std::expected<SendFlags, int> parse_command_line(int argc, const char* const* argv,
                                                 std::ostream& out, std::ostream& err);

// Writes every flag that was given over the config's value.
void apply_flags(const SendFlags& flags, Config& config);
void apply_observability_flags(const ObservabilityFlags& flags, Config& config);
void apply_security_flags(const SecurityFlags& flags, Config& config);
void apply_routing_flags(const RoutingFlags& flags, Config& config);

}  // namespace ringmail::app

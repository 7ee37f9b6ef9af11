// ringmail's settings: one TOML file mapped onto engine::EngineOptions plus what `send`
// needs (relay, sender, progress display). Command-line flags override it (cli.h).
#pragma once

#include <expected>
#include <optional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine_options.h"
#include "storage/storage_options.h"

namespace ringmail::app {

enum class ProgressMode {
  kAuto,  // a live bar when stderr is a terminal, else a plain line every `interval`
  kBar,
  kPlain,
  kOff,
};

struct ProgressSettings {
  ProgressMode mode = ProgressMode::kAuto;
  engine::Seconds plain_interval{5};  // between plain lines
};

// The Prometheus endpoint (metrics/exporter.h).
struct MetricsSettings {
  bool enabled = true;
  // "IPv4:PORT" or "[IPv6]:PORT". Unset: the default address (metrics::kDefaultListen),
  // which, when taken (say by another run), costs only a warning; a listen address given
  // in the config or by flag that cannot be bound is a start-up error.
  std::optional<std::string> listen;
  // After the run, keep serving /metrics this long (or until SIGINT/SIGTERM), so a
  // short campaign is still scraped at its end.
  engine::Seconds linger{0};
  // Destination sites exported by name in ringmail_site_*, besides the configured ones
  // (engine.site_metrics.sites, from `sites`): the busiest this many.
  size_t top_sites = 10;
};

enum class OutcomeLogFormat { kLogfmt, kJson };

// The structured outcome log (metrics/outcome_log.h).
struct LogSettings {
  std::string file;  // "" (default): no outcome log; "-": stderr
  OutcomeLogFormat format = OutcomeLogFormat::kLogfmt;
};

// Where the relay's credentials come from. The password itself is read once at start-up
// into engine.security.auth and never logged.
struct AuthSettings {
  std::string user;
  std::string password_env;  // name of the environment variable holding the password
  std::string password;      // in the file itself (discouraged: prefer password_env)
  bool allow_plaintext = false;
};

struct Config {
  engine::EngineOptions engine;  // engine.security: [tls] (and [auth], once resolved); engine.mx: [dns]
  AuthSettings auth;
  std::string tls_server_name;  // [tls] server_name: the name checked in the certificate
  uint16_t mx_port = 25;        // [dns] smtp_port: the port towards mail exchangers
  // [routes]: per domain, a relay instead of MX and/or security of its own:
  //   "example.test" = "host:port"  or  "bank.example" = { relay = "host:port", tls = "verify",
  //   implicit = true, auth_user = "u", auth_password_env = "VAR" }
  struct Route {
    std::string relay;  // empty: the domain's MX
    std::optional<engine::TlsPolicy::Mode> tls;
    std::optional<bool> implicit;
    AuthSettings auth;  // user empty: no AUTH ([auth] is send.relay's alone)
    bool has_own_security() const { return tls || implicit || !auth.user.empty(); }
  };
  std::map<std::string, Route> routes;
  std::string relay;  // "host:port" or "[v6]:port"; no default
  std::string from;   // envelope sender; no default
  ProgressSettings progress;
  MetricsSettings metrics;
  LogSettings log;
  storage::StorageOptions storage;  // [storage]: the database of enqueue/run/status
  storage::RetrySchedule retry;      // [retry]: backoff and maximum age of deferrals
  // [pool] max_backlog: engine.pool.max_backlog for runs from a database, the only source
  // that can keep parked work (`send --no-db` never parks); 0 turns parking off.
  engine::Seconds pool_max_backlog{5};
};

// Accepted ranges, shared by the config file and the command line.
struct Limits {
  static constexpr unsigned kMaxShards = 1024;
  static constexpr unsigned kMaxConnections = 100000;
  static constexpr unsigned kMaxMessagesPerConnection = 100000000;
  static constexpr unsigned kMaxRecipientsPerTransaction = 100000;
  static constexpr double kMaxSeconds = 7 * 24 * 3600;
  static constexpr double kMaxRate = 1e9;
};

// Parses TOML text. Unknown tables or keys, wrong types and values out of range are errors
// "SOURCE:LINE: ..." naming the key. Keys left out keep their defaults.
std::expected<Config, std::string> parse_config(std::string_view toml_text,
                                                std::string_view source_name);

// Reads and parses a config file; errors name the file.
std::expected<Config, std::string> load_config_file(const std::string& path);

// Every key the file accepts, "table.key", in documentation order.
std::vector<std::string> config_keys();

// Checks what no single key can: a relay and a valid sender are present, the EHLO name is
// a domain or address literal. Run after the flags have been applied.
std::expected<void, std::string> validate_for_send(const Config& config);

// "disabled" | "opportunistic" | "required" | "verify".
std::expected<engine::TlsPolicy::Mode, std::string> parse_tls_mode(std::string_view text);

// One DNS server (dns.servers, --dns-server) in a form c-ares takes: "IPv4", "IPv4:PORT",
// "IPv6" or "[IPv6]:PORT"; numeric only (a host name is not looked up), port 1-65535, 53
// when left out. Checked at start-up: c-ares would refuse it only later, on each shard.
std::expected<void, std::string> validate_dns_server(std::string_view server);

// Fills config.engine.security.auth from [auth] (reading the password's environment
// variable). An error when a user is given without a password, or the variable is unset.
std::expected<void, std::string> resolve_credentials(Config& config);

// The credentials of `auth` as a value (reading the password's environment variable);
// nullopt for no user. `what` names the setting in errors ("auth", "routes.x.test").
std::expected<std::optional<smtp::AuthCredentials>, std::string> credentials_of(
    const AuthSettings& auth, std::string_view what);

// With credentials in memory the process makes itself non-dumpable (no core file, no
// ptrace by other users), so a crash cannot leak the password. Start-up only.
void keep_credentials_out_of_core_dumps(const Config& config);

// One line when credentials go with a TLS mode other than verify ([auth], or a route's
// own): the certificate is then not checked, so an active attacker can present any and
// collect the password. Postfix does the same below its "verify" level, so this only
// warns. Call after make_route_resolver() (routes' profiles).
std::optional<std::string> credentials_without_verify_warning(const Config& config);

const char* to_string(ProgressMode mode);
const char* to_string(OutcomeLogFormat format);

}  // namespace ringmail::app

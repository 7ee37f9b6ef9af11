#include "app/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <arpa/inet.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "app/age.h"
#include "app/mailbox.h"

namespace ringmail::app {
namespace {

using Status = std::expected<void, std::string>;

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

template <typename T>
Status read_integer(const toml::node& n, T& out, uint64_t min, uint64_t max) {
  if (!n.is_integer()) {
    return std::unexpected(fmt::format("must be an integer, not {}", type_name(n)));
  }
  int64_t v = n.as_integer()->get();
  if (v < 0 || static_cast<uint64_t>(v) < min || static_cast<uint64_t>(v) > max) {
    return std::unexpected(fmt::format("must be from {} to {} (got {})", min, max, v));
  }
  out = static_cast<T>(v);
  return {};
}

std::expected<double, std::string> read_number(const toml::node& n, double min, double max) {
  double v = 0;
  if (n.is_integer()) {
    v = static_cast<double>(n.as_integer()->get());
  } else if (n.is_floating_point()) {
    v = n.as_floating_point()->get();
  } else {
    return std::unexpected(fmt::format("must be a number, not {}", type_name(n)));
  }
  if (!std::isfinite(v) || v < min || v > max) {
    return std::unexpected(fmt::format("must be from {} to {} (got {})", min, max, v));
  }
  return v;
}

// A timeout must be positive; `allow_zero` for the ones where 0 means "at once".
Status read_seconds(const toml::node& n, engine::Seconds& out, bool allow_zero) {
  auto v = read_number(n, 0, Limits::kMaxSeconds);
  if (!v) return std::unexpected(v.error());
  if (*v == 0 && !allow_zero) return std::unexpected("must be more than 0 seconds");
  out = engine::Seconds(*v);
  return {};
}

Status read_bool(const toml::node& n, bool& out) {
  if (!n.is_boolean())
    return std::unexpected(fmt::format("must be true or false, not {}", type_name(n)));
  out = n.as_boolean()->get();
  return {};
}

Status read_string(const toml::node& n, std::string& out) {
  if (!n.is_string()) return std::unexpected(fmt::format("must be a string, not {}", type_name(n)));
  out = n.as_string()->get();
  return {};
}

Status read_progress_mode(const toml::node& n, ProgressMode& out) {
  std::string s;
  if (auto ok = read_string(n, s); !ok) return ok;
  for (ProgressMode m :
       {ProgressMode::kAuto, ProgressMode::kBar, ProgressMode::kPlain, ProgressMode::kOff}) {
    if (s == to_string(m)) {
      out = m;
      return {};
    }
  }
  return std::unexpected(
      fmt::format("must be \"auto\", \"bar\", \"plain\" or \"off\" (got \"{}\")", s));
}

Status read_tls_mode(const toml::node& n, engine::TlsPolicy::Mode& out) {
  std::string s;
  if (auto ok = read_string(n, s); !ok) return ok;
  auto mode = parse_tls_mode(s);
  if (!mode) return std::unexpected(mode.error());
  out = *mode;
  return {};
}

Status read_log_format(const toml::node& n, OutcomeLogFormat& out) {
  std::string s;
  if (auto ok = read_string(n, s); !ok) return ok;
  for (OutcomeLogFormat f : {OutcomeLogFormat::kLogfmt, OutcomeLogFormat::kJson}) {
    if (s == to_string(f)) {
      out = f;
      return {};
    }
  }
  return std::unexpected(fmt::format("must be \"logfmt\" or \"json\" (got \"{}\")", s));
}

struct KeyRule {
  std::string_view table;
  std::string_view key;
  Status (*apply)(const toml::node&, Config&);
};

// The whole schema. ringmail.example.toml and CONFIG.md document these keys; a unit test
// keeps the three in step.
constexpr KeyRule kRules[] = {
    {"send", "relay", [](const toml::node& n, Config& c) { return read_string(n, c.relay); }},
    {"send", "from", [](const toml::node& n, Config& c) { return read_string(n, c.from); }},
    {"engine", "shards",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.engine.shards, 0, Limits::kMaxShards);
     }},
    {"engine", "helo_name",
     [](const toml::node& n, Config& c) { return read_string(n, c.engine.helo_name); }},
    {"engine", "pipelining",
     [](const toml::node& n, Config& c) { return read_bool(n, c.engine.pipelining); }},
    {"engine", "drain_timeout",
     [](const toml::node& n, Config& c) { return read_seconds(n, c.engine.drain_timeout, true); }},
    {"engine", "shard_inbox_capacity",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.engine.shard_inbox_capacity, 1, 1u << 24);
     }},
    {"engine", "max_connections_per_shard",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.engine.max_connections_per_shard, 0, 1u << 20);
     }},
    {"engine", "max_not_attempted_retries",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.engine.max_not_attempted_retries, 0, 1000);
     }},
    {"timeouts", "connect",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.engine.timeouts.connect, false);
     }},
    {"timeouts", "greeting",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.engine.timeouts.greeting, false);
     }},
    {"timeouts", "command",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.engine.timeouts.command, false);
     }},
    {"timeouts", "data_start",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.engine.timeouts.data_start, false);
     }},
    {"timeouts", "data_block",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.engine.timeouts.data_block, false);
     }},
    {"timeouts", "data_end",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.engine.timeouts.data_end, false);
     }},
    {"pool", "max_connections",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.engine.pool.max_connections, 1, Limits::kMaxConnections);
     }},
    {"pool", "max_messages_per_connection",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.engine.pool.max_messages_per_connection, 1,
                           Limits::kMaxMessagesPerConnection);
     }},
    {"pool", "max_recipients_per_transaction",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.engine.pool.max_recipients_per_transaction, 1,
                           Limits::kMaxRecipientsPerTransaction);
     }},
    {"pool", "idle_timeout",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.engine.pool.idle_timeout, true);
     }},
    {"pool", "dead_destination_pause",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.engine.pool.dead_destination_pause, false);
     }},
    {"pool", "max_backlog",
     [](const toml::node& n, Config& c) { return read_seconds(n, c.pool_max_backlog, true); }},
    {"pool", "messages_per_second",
     [](const toml::node& n, Config& c) -> Status {
       auto v = read_number(n, 0, Limits::kMaxRate);
       if (!v) return std::unexpected(v.error());
       c.engine.pool.messages_per_second = *v;
       return {};
     }},
    {"progress", "mode",
     [](const toml::node& n, Config& c) { return read_progress_mode(n, c.progress.mode); }},
    {"progress", "interval",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.progress.plain_interval, false);
     }},
    {"dns", "servers",
     [](const toml::node& n, Config& c) -> Status {
       const toml::array* a = n.as_array();
       if (a == nullptr) return std::unexpected(std::string("must be an array of \"host:port\" strings"));
       c.engine.mx.resolver.servers.clear();
       for (const toml::node& e : *a) {
         std::string s;
         if (auto ok = read_string(e, s); !ok) return ok;
         if (auto ok = validate_dns_server(s); !ok) return std::unexpected("entry " + ok.error());
         c.engine.mx.resolver.servers.push_back(std::move(s));
       }
       return {};
     }},
    {"dns", "smtp_port",
     [](const toml::node& n, Config& c) { return read_integer(n, c.mx_port, 1, 65535); }},
    {"dns", "timeout",
     [](const toml::node& n, Config& c) -> Status {
       engine::Seconds s{0};
       if (auto ok = read_seconds(n, s, false); !ok) return ok;
       c.engine.mx.resolver.query_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(s);
       return {};
     }},
    {"dns", "max_exchangers",
     [](const toml::node& n, Config& c) { return read_integer(n, c.engine.mx.resolver.max_exchangers, 1, 50); }},
    {"dns", "ipv6",
     [](const toml::node& n, Config& c) -> Status {
       std::string s;
       if (auto ok = read_string(n, s); !ok) return ok;
       using F = dns::ResolverOptions::Families;
       auto& r = c.engine.mx.resolver;
       if (s == "off") r.families = F::kIpv4Only, r.prefer_ipv6 = false;
       else if (s == "also") r.families = F::kBoth, r.prefer_ipv6 = false;
       else if (s == "prefer") r.families = F::kBoth, r.prefer_ipv6 = true;
       else if (s == "only") r.families = F::kIpv6Only, r.prefer_ipv6 = true;
       else return std::unexpected(fmt::format("must be \"off\", \"also\", \"prefer\" or \"only\" (got \"{}\")", s));
       return {};
     }},
    {"tls", "mode",
     [](const toml::node& n, Config& c) { return read_tls_mode(n, c.engine.security.tls.mode); }},
    {"tls", "ca_file",
     [](const toml::node& n, Config& c) { return read_string(n, c.engine.security.tls.ca_file); }},
    {"tls", "ca_dir",
     [](const toml::node& n, Config& c) { return read_string(n, c.engine.security.tls.ca_dir); }},
    {"tls", "implicit",
     [](const toml::node& n, Config& c) { return read_bool(n, c.engine.security.implicit_tls); }},
    {"tls", "server_name",
     [](const toml::node& n, Config& c) { return read_string(n, c.tls_server_name); }},
    {"tls", "resumption",
     [](const toml::node& n, Config& c) { return read_bool(n, c.engine.security.tls.resume_sessions); }},
    {"auth", "user", [](const toml::node& n, Config& c) { return read_string(n, c.auth.user); }},
    {"auth", "password_env",
     [](const toml::node& n, Config& c) { return read_string(n, c.auth.password_env); }},
    {"auth", "password",
     [](const toml::node& n, Config& c) { return read_string(n, c.auth.password); }},
    {"auth", "allow_plaintext",
     [](const toml::node& n, Config& c) { return read_bool(n, c.auth.allow_plaintext); }},
    {"metrics", "enabled",
     [](const toml::node& n, Config& c) { return read_bool(n, c.metrics.enabled); }},
    {"metrics", "listen",
     [](const toml::node& n, Config& c) -> Status {
       std::string s;
       if (auto ok = read_string(n, s); !ok) return ok;
       c.metrics.listen = std::move(s);
       return {};
     }},
    {"metrics", "linger",
     [](const toml::node& n, Config& c) { return read_seconds(n, c.metrics.linger, true); }},
    {"metrics", "sites",
     [](const toml::node& n, Config& c) -> Status {
       const toml::array* a = n.as_array();
       if (a == nullptr) return std::unexpected(std::string("must be an array of domain or relay names"));
       c.engine.site_metrics.sites.clear();
       for (const toml::node& e : *a) {
         std::string s;
         if (auto ok = read_string(e, s); !ok) return ok;
         c.engine.site_metrics.sites.push_back(std::move(s));
       }
       return {};
     }},
    {"metrics", "top_sites",
     [](const toml::node& n, Config& c) { return read_integer(n, c.metrics.top_sites, 0, 100); }},
    {"log", "file", [](const toml::node& n, Config& c) { return read_string(n, c.log.file); }},
    {"log", "format",
     [](const toml::node& n, Config& c) { return read_log_format(n, c.log.format); }},
    {"storage", "path",
     [](const toml::node& n, Config& c) { return read_string(n, c.storage.path); }},
    {"storage", "synchronous",
     [](const toml::node& n, Config& c) -> Status {
       std::string s;
       if (auto ok = read_string(n, s); !ok) return ok;
       if (s == "normal") {
         c.storage.synchronous = storage::Synchronous::kNormal;
       } else if (s == "full") {
         c.storage.synchronous = storage::Synchronous::kFull;
       } else {
         return std::unexpected(fmt::format("must be \"normal\" or \"full\" (got \"{}\")", s));
       }
       return {};
     }},
    {"storage", "commit_interval",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.storage.commit_interval, false);
     }},
    {"storage", "commit_batch",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.storage.commit_batch, 1, 1000000);
     }},
    {"storage", "claim_batch",
     [](const toml::node& n, Config& c) {
       return read_integer(n, c.storage.claim_batch, 1, 1000000);
     }},
    {"storage", "lease_duration",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.storage.lease_duration, false);
     }},
    {"storage", "idle_poll",
     [](const toml::node& n, Config& c) { return read_seconds(n, c.storage.idle_poll, false); }},
    {"storage", "retention",
     [](const toml::node& n, Config& c) -> Status {
       // An age as `purge --older-than` takes it, or 0: kept for ever.
       if ((n.is_integer() && n.as_integer()->get() == 0) ||
           (n.is_string() && n.as_string()->get() == "0")) {
         c.storage.retention = storage::Seconds(0);
         return {};
       }
       if (!n.is_string())
         return std::unexpected(fmt::format(
             "must be an age such as \"30d\" or \"12h\", or 0 to keep everything, not {}",
             type_name(n)));
       auto ms = parse_age_ms(n.as_string()->get());  // "0d" too: kept for ever
       if (!ms) return std::unexpected(ms.error());
       c.storage.retention = storage::Seconds(static_cast<double>(*ms) / 1000);
       return {};
     }},
    {"storage", "retention_check",
     [](const toml::node& n, Config& c) {
       return read_seconds(n, c.storage.retention_check, false);
     }},
    {"storage", "message_cache_mb",
     [](const toml::node& n, Config& c) -> Status {
       size_t mb = 0;
       if (auto ok = read_integer(n, mb, 1, 65536); !ok) return ok;
       c.storage.message_cache_bytes = mb << 20;
       return {};
     }},
    {"retry", "first_delay",
     [](const toml::node& n, Config& c) { return read_seconds(n, c.retry.first_delay, true); }},
    {"retry", "factor",
     [](const toml::node& n, Config& c) -> Status {
       auto v = read_number(n, 1, 100);
       if (!v) return std::unexpected(v.error());
       c.retry.factor = *v;
       return {};
     }},
    {"retry", "max_delay",
     [](const toml::node& n, Config& c) { return read_seconds(n, c.retry.max_delay, true); }},
    {"retry", "jitter",
     [](const toml::node& n, Config& c) -> Status {
       auto v = read_number(n, 0, 1);
       if (!v) return std::unexpected(v.error());
       c.retry.jitter = *v;
       return {};
     }},
    {"retry", "max_age",
     [](const toml::node& n, Config& c) -> Status {
       auto v = read_number(n, 0, 365.0 * 24 * 3600);
       if (!v) return std::unexpected(v.error());
       c.retry.max_age = engine::Seconds(*v);
       return {};
     }},
};

bool is_table_name(std::string_view name) {
  for (const KeyRule& r : kRules) {
    if (r.table == name) return true;
  }
  return false;
}

// "send, engine, ...": every table of the schema, in documentation order.
std::string table_names() {
  std::string out;
  std::string_view last;
  for (const KeyRule& r : kRules) {
    if (r.table == last) continue;
    if (!out.empty()) out += ", ";
    out += r.table;
    last = r.table;
  }
  return out;
}

const KeyRule* find_rule(std::string_view table, std::string_view key) {
  for (const KeyRule& r : kRules) {
    if (r.table == table && r.key == key) return &r;
  }
  return nullptr;
}

std::string keys_of(std::string_view table) {
  std::string out;
  for (const KeyRule& r : kRules) {
    if (r.table != table) continue;
    if (!out.empty()) out += ", ";
    out += r.key;
  }
  return out;
}

// A value from the user, quoted in an error message with control bytes escaped, so a
// stray CR cannot rewrite the terminal line that reports it.
std::string escaped(std::string_view value) {
  std::string out;
  for (unsigned char c : value) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

const char* to_string(ProgressMode mode) {
  switch (mode) {
    case ProgressMode::kAuto:
      return "auto";
    case ProgressMode::kBar:
      return "bar";
    case ProgressMode::kPlain:
      return "plain";
    case ProgressMode::kOff:
      return "off";
  }
  return "?";
}

const char* to_string(OutcomeLogFormat format) {
  return format == OutcomeLogFormat::kJson ? "json" : "logfmt";
}

std::expected<Config, std::string> parse_config(std::string_view toml_text,
                                                std::string_view source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    return std::unexpected(
        fmt::format("{}:{}: {}", source_name, e.source().begin.line, e.description()));
  }

  Config config;
  for (auto&& [table_key, table_node] : root) {
    const auto line = table_key.source().begin.line;
    if (table_key.str() == "routes" && table_node.is_table()) {
      // Free keys: each is a domain; its value the relay it goes through, or a table
      // { relay = "host:port", tls = "verify" } (either key may be left out).
      for (auto&& [domain, value] : *table_node.as_table()) {
        Config::Route route;
        Status ok;
        if (const toml::table* t = value.as_table()) {
          for (auto&& [key, v] : *t) {
            if (key.str() == "relay") ok = read_string(v, route.relay);
            else if (key.str() == "tls") {
              engine::TlsPolicy::Mode mode{};
              ok = read_tls_mode(v, mode);
              if (ok) route.tls = mode;
            } else if (key.str() == "implicit") {
              bool implicit = false;
              ok = read_bool(v, implicit);
              if (ok) route.implicit = implicit;
            } else if (key.str() == "auth_user") ok = read_string(v, route.auth.user);
            else if (key.str() == "auth_password_env") ok = read_string(v, route.auth.password_env);
            else if (key.str() == "auth_allow_plaintext") ok = read_bool(v, route.auth.allow_plaintext);
            else {
              ok = std::unexpected(fmt::format(
                  "has unknown key '{}' (keys: relay, tls, implicit, auth_user, "
                  "auth_password_env, auth_allow_plaintext)",
                  key.str()));
            }
            if (!ok) break;
          }
        } else {
          ok = read_string(value, route.relay);
        }
        if (!ok)
          return std::unexpected(fmt::format("{}:{}: 'routes.{}' {}", source_name,
                                             value.source().begin.line, domain.str(), ok.error()));
        std::string lower(domain.str());
        for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
        config.routes[lower] = std::move(route);
      }
      continue;
    }
    if (!is_table_name(table_key.str())) {
      return std::unexpected(
          fmt::format("{}:{}: unknown {} '{}' (known tables: {})", source_name, line,
                      table_node.is_table() ? "table" : "key", table_key.str(), table_names()));
    }
    const toml::table* table = table_node.as_table();
    if (table == nullptr) {
      return std::unexpected(fmt::format("{}:{}: '{}' must be a table, not {}", source_name, line,
                                         table_key.str(), type_name(table_node)));
    }
    for (auto&& [key, value] : *table) {
      const KeyRule* rule = find_rule(table_key.str(), key.str());
      if (rule == nullptr) {
        return std::unexpected(fmt::format("{}:{}: unknown key '{}.{}' (keys of [{}]: {})",
                                           source_name, key.source().begin.line, table_key.str(),
                                           key.str(), table_key.str(), keys_of(table_key.str())));
      }
      if (auto ok = rule->apply(value, config); !ok) {
        return std::unexpected(fmt::format("{}:{}: '{}.{}' {}", source_name,
                                           value.source().begin.line, table_key.str(), key.str(),
                                           ok.error()));
      }
    }
  }
  return config;
}

std::expected<Config, std::string> load_config_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return std::unexpected(fmt::format("cannot read config file '{}': is a directory", path));
  }
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::unexpected(fmt::format("cannot read config file '{}': {}", path,
                                       std::strerror(errno != 0 ? errno : ENOENT)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::unexpected(fmt::format("cannot read config file '{}'", path));
  return parse_config(text.view(), path);
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const KeyRule& r : kRules) keys.push_back(fmt::format("{}.{}", r.table, r.key));
  return keys;
}

std::expected<void, std::string> validate_dns_server(std::string_view server) {
  auto is_address = [](int family, std::string_view text) {
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return false;
    std::string copy(text);  // inet_pton wants a terminated string
    unsigned char out[sizeof(in6_addr)];
    return inet_pton(family, copy.c_str(), out) == 1;
  };
  auto check_port = [&](std::string_view port) -> std::expected<void, std::string> {
    unsigned value = 0;
    bool digits = !port.empty() && port.size() <= 5;
    for (char c : port) {
      digits = digits && c >= '0' && c <= '9';
      if (digits) value = value * 10 + unsigned(c - '0');
    }
    if (!digits || value < 1 || value > 65535)
      return std::unexpected(fmt::format("\"{}\": the port must be from 1 to 65535", server));
    return {};
  };
  if (server.starts_with('[')) {
    const size_t close = server.find(']');
    if (close != std::string_view::npos && is_address(AF_INET6, server.substr(1, close - 1))) {
      if (close + 1 == server.size()) {
        return std::unexpected(fmt::format(
            "\"{}\": an IPv6 address in brackets needs a port ([::1]:53); without one, leave the "
            "brackets out (::1)",
            server));
      }
      if (server[close + 1] == ':') return check_port(server.substr(close + 2));
    }
  } else if (is_address(AF_INET6, server) || is_address(AF_INET, server)) {
    return {};
  } else if (const size_t colon = server.find(':');
             colon != std::string_view::npos && is_address(AF_INET, server.substr(0, colon))) {
    return check_port(server.substr(colon + 1));
  }
  return std::unexpected(fmt::format(
      "\"{}\" is not IPv4, IPv4:PORT, IPv6 or [IPv6]:PORT (numeric: a host name is not looked up)",
      server));
}

std::expected<engine::TlsPolicy::Mode, std::string> parse_tls_mode(std::string_view s) {
  if (s == "disabled") return engine::TlsPolicy::kDisabled;
  if (s == "opportunistic") return engine::TlsPolicy::kOpportunistic;
  if (s == "required") return engine::TlsPolicy::kRequired;
  if (s == "verify") return engine::TlsPolicy::kVerify;
  return std::unexpected(fmt::format(
      "must be \"disabled\", \"opportunistic\", \"required\" or \"verify\" (got \"{}\")", s));
}

std::expected<std::optional<smtp::AuthCredentials>, std::string> credentials_of(
    const AuthSettings& a, std::string_view what) {
  if (a.user.empty()) {
    if (!a.password_env.empty() || !a.password.empty())
      return std::unexpected(fmt::format("{}: a password is configured but no user", what));
    return std::nullopt;
  }
  std::string password = a.password;
  if (!a.password_env.empty()) {
    const char* value = std::getenv(a.password_env.c_str());
    if (value == nullptr || *value == '\0')
      return std::unexpected(fmt::format("{}: password variable {} is not set (or empty)", what,
                                         a.password_env));
    password = value;
  }
  if (password.empty())
    return std::unexpected(fmt::format(
        "{}: user given without a password (--auth-password-env VAR or a password_env key)", what));
  return smtp::AuthCredentials{a.user, std::move(password), a.allow_plaintext};
}

std::expected<void, std::string> resolve_credentials(Config& config) {
  auto credentials = credentials_of(config.auth, "auth");
  if (!credentials) return std::unexpected(credentials.error());
  config.engine.security.auth = std::move(*credentials);
  return {};
}

void keep_credentials_out_of_core_dumps(const Config& config) {
  bool any = config.engine.security.auth.has_value();
  for (const auto& profile : config.engine.route_security) any |= profile.auth.has_value();
  if (any) ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

std::optional<std::string> credentials_without_verify_warning(const Config& config) {
  const auto exposed = [](const engine::TransportSecurity& s) {
    return s.auth.has_value() && s.tls.mode != engine::TlsPolicy::kVerify;
  };
  std::string where;
  if (exposed(config.engine.security))
    where = fmt::format("[auth] (tls {})", engine::to_string(config.engine.security.tls.mode));
  const auto routes = std::count_if(config.engine.route_security.begin(),
                                    config.engine.route_security.end(), exposed);
  if (routes > 0)
    where += fmt::format("{}{} route(s) with an auth_user of their own",
                         where.empty() ? "" : " and ", routes);
  if (where.empty()) return std::nullopt;
  return fmt::format(
      "credentials of {} go without a verified certificate: an active attacker on the path "
      "can collect them; only tls verify protects them",
      where);
}

std::expected<void, std::string> validate_for_send(const Config& config) {
  // No relay: every domain without a [routes] entry is delivered to its MX.
  if (config.from.empty()) {
    return std::unexpected("no sender: give --from ADDRESS or set [send] from in the config");
  }
  if (auto ok = validate_mailbox(config.from); !ok) {
    return std::unexpected(
        fmt::format("invalid sender address '{}': {}", escaped(config.from), ok.error()));
  }
  if (auto ok = validate_domain(config.engine.helo_name); !ok) {
    return std::unexpected(
        fmt::format("invalid EHLO name '{}': {}", escaped(config.engine.helo_name), ok.error()));
  }
  return {};
}

}  // namespace ringmail::app

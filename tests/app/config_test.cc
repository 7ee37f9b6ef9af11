#include "app/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "app/routing.h"
#include "tests/app/temp_dir.h"

namespace ringmail::app {
namespace {

void expect_engine_options_equal(const engine::EngineOptions& a, const engine::EngineOptions& b) {
  EXPECT_EQ(a.shards, b.shards);
  EXPECT_EQ(a.helo_name, b.helo_name);
  EXPECT_EQ(a.pipelining, b.pipelining);
  EXPECT_EQ(a.timeouts.connect, b.timeouts.connect);
  EXPECT_EQ(a.timeouts.greeting, b.timeouts.greeting);
  EXPECT_EQ(a.timeouts.command, b.timeouts.command);
  EXPECT_EQ(a.timeouts.data_start, b.timeouts.data_start);
  EXPECT_EQ(a.timeouts.data_block, b.timeouts.data_block);
  EXPECT_EQ(a.timeouts.data_end, b.timeouts.data_end);
  EXPECT_EQ(a.pool.max_connections, b.pool.max_connections);
  EXPECT_EQ(a.pool.max_messages_per_connection, b.pool.max_messages_per_connection);
  EXPECT_EQ(a.pool.max_recipients_per_transaction, b.pool.max_recipients_per_transaction);
  EXPECT_EQ(a.pool.idle_timeout, b.pool.idle_timeout);
  EXPECT_EQ(a.pool.messages_per_second, b.pool.messages_per_second);
  EXPECT_EQ(a.drain_timeout, b.drain_timeout);
  EXPECT_EQ(a.shard_inbox_capacity, b.shard_inbox_capacity);
  EXPECT_EQ(a.max_connections_per_shard, b.max_connections_per_shard);
  EXPECT_EQ(a.max_not_attempted_retries, b.max_not_attempted_retries);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(app_config, EmptyFileKeepsEveryDefault) {
  auto config = parse_config("", "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  expect_engine_options_equal(config->engine, engine::EngineOptions{});
  EXPECT_EQ(config->relay, "");
  EXPECT_EQ(config->from, "");
  EXPECT_EQ(config->progress.mode, ProgressMode::kAuto);
  EXPECT_EQ(config->progress.plain_interval, engine::Seconds(5));
  EXPECT_EQ(config->storage.retention, storage::StorageOptions{}.retention);
  EXPECT_EQ(config->storage.retention_check, storage::StorageOptions{}.retention_check);
}

TEST(app_config, ReadsEveryKey) {
  auto config = parse_config(R"(
[send]
relay = "[::1]:2525"
from = "bulk@example.com"

[engine]
shards = 4
helo_name = "mta1.example.com"
pipelining = false
drain_timeout = 2.5
shard_inbox_capacity = 128
max_connections_per_shard = 500
max_not_attempted_retries = 0

[timeouts]
connect = 1
greeting = 2
command = 3
data_start = 4
data_block = 5
data_end = 6.5

[pool]
max_connections = 50
max_messages_per_connection = 7
max_recipients_per_transaction = 1000
idle_timeout = 0
messages_per_second = 120.5

[progress]
mode = "plain"
interval = 1
)",
                             "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->relay, "[::1]:2525");
  EXPECT_EQ(config->from, "bulk@example.com");
  const auto& e = config->engine;
  EXPECT_EQ(e.shards, 4u);
  EXPECT_EQ(e.helo_name, "mta1.example.com");
  EXPECT_FALSE(e.pipelining);
  EXPECT_EQ(e.drain_timeout, engine::Seconds(2.5));
  EXPECT_EQ(e.shard_inbox_capacity, 128u);
  EXPECT_EQ(e.max_connections_per_shard, 500u);
  EXPECT_EQ(e.max_not_attempted_retries, 0u);
  EXPECT_EQ(e.timeouts.connect, engine::Seconds(1));
  EXPECT_EQ(e.timeouts.greeting, engine::Seconds(2));
  EXPECT_EQ(e.timeouts.command, engine::Seconds(3));
  EXPECT_EQ(e.timeouts.data_start, engine::Seconds(4));
  EXPECT_EQ(e.timeouts.data_block, engine::Seconds(5));
  EXPECT_EQ(e.timeouts.data_end, engine::Seconds(6.5));
  EXPECT_EQ(e.pool.max_connections, 50u);
  EXPECT_EQ(e.pool.max_messages_per_connection, 7u);
  EXPECT_EQ(e.pool.max_recipients_per_transaction, 1000u);
  EXPECT_EQ(e.pool.idle_timeout, engine::Seconds(0));
  EXPECT_EQ(e.pool.messages_per_second, 120.5);
  EXPECT_EQ(config->progress.mode, ProgressMode::kPlain);
  EXPECT_EQ(config->progress.plain_interval, engine::Seconds(1));
}

TEST(app_config, MessageCacheIsGivenInMebibytes) {
  EXPECT_EQ(Config{}.storage.message_cache_bytes, size_t{64} << 20);
  auto config = parse_config("[storage]\nmessage_cache_mb = 3\n", "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->storage.message_cache_bytes, size_t{3} << 20);
  EXPECT_FALSE(parse_config("[storage]\nmessage_cache_mb = 0\n", "cfg.toml"));
}

TEST(app_config, RetentionIsAnAgeOrZero) {
  EXPECT_EQ(Config{}.storage.retention, storage::Seconds(30 * 24 * 3600));
  auto config = parse_config("[storage]\nretention = \"12h\"\nretention_check = 600\n", "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->storage.retention, storage::Seconds(12 * 3600));
  EXPECT_EQ(config->storage.retention_check, storage::Seconds(600));
  for (const char* off : {"retention = 0", "retention = \"0\"", "retention = \"0d\""}) {
    auto kept = parse_config(std::string("[storage]\n") + off + "\n", "cfg.toml");
    ASSERT_TRUE(kept) << kept.error();
    EXPECT_EQ(kept->storage.retention, storage::Seconds(0));
  }
  // A bare number other than 0 is refused: seconds or days would both be a guess.
  auto number = parse_config("[storage]\nretention = 30\n", "cfg.toml");
  ASSERT_FALSE(number);
  EXPECT_NE(number.error().find("cfg.toml"), std::string::npos) << number.error();
  EXPECT_NE(number.error().find("\"30d\""), std::string::npos) << number.error();
  EXPECT_FALSE(parse_config("[storage]\nretention = \"30 days\"\n", "cfg.toml"));
  EXPECT_FALSE(parse_config("[storage]\nretention_check = 0\n", "cfg.toml"));
}

TEST(app_config, DottedKeysAtTheTopLevelWorkToo) {
  auto config = parse_config("pool.max_connections = 3\n", "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->engine.pool.max_connections, 3u);
}

TEST(app_config, UnknownKeyNamesFileAndLine) {
  auto config = parse_config("[pool]\nmax_connections = 5\nmax_conections = 6\n", "cfg.toml");
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error(),
            "cfg.toml:3: unknown key 'pool.max_conections' (keys of [pool]: max_connections, "
            "max_messages_per_connection, max_recipients_per_transaction, idle_timeout, "
            "dead_destination_pause, max_backlog, messages_per_second)");
}

TEST(app_config, UnknownTableNamesFileAndLine) {
  auto config = parse_config("\n\n[smtp]\nport = 25\n", "cfg.toml");
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error(),
            "cfg.toml:3: unknown table 'smtp' (known tables: send, engine, timeouts, pool, "
            "progress, dns, tls, auth, metrics, log, storage, retry)");
  auto top = parse_config("relay = \"x:25\"\n", "cfg.toml");
  ASSERT_FALSE(top);
  EXPECT_TRUE(top.error().starts_with("cfg.toml:1: unknown key 'relay'")) << top.error();
}

TEST(app_config, WrongTypesNameFileLineAndKey) {
  auto shards = parse_config("[engine]\nshards = \"four\"\n", "cfg.toml");
  ASSERT_FALSE(shards);
  EXPECT_EQ(shards.error(), "cfg.toml:2: 'engine.shards' must be an integer, not a string");

  auto pipelining = parse_config("[engine]\n\npipelining = 1\n", "cfg.toml");
  ASSERT_FALSE(pipelining);
  EXPECT_EQ(pipelining.error(),
            "cfg.toml:3: 'engine.pipelining' must be true or false, not an integer");

  auto timeout = parse_config("[timeouts]\nconnect = \"30s\"\n", "cfg.toml");
  ASSERT_FALSE(timeout);
  EXPECT_EQ(timeout.error(), "cfg.toml:2: 'timeouts.connect' must be a number, not a string");

  auto table = parse_config("pool = 3\n", "cfg.toml");
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error(), "cfg.toml:1: 'pool' must be a table, not an integer");

  auto mode = parse_config("[progress]\nmode = \"fancy\"\n", "cfg.toml");
  ASSERT_FALSE(mode);
  EXPECT_EQ(mode.error(),
            "cfg.toml:2: 'progress.mode' must be \"auto\", \"bar\", \"plain\" or \"off\" (got "
            "\"fancy\")");
}

TEST(app_config, ValuesOutOfRange) {
  auto zero = parse_config("[pool]\nmax_connections = 0\n", "cfg.toml");
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error(), "cfg.toml:2: 'pool.max_connections' must be from 1 to 100000 (got 0)");

  auto negative = parse_config("[engine]\nshards = -1\n", "cfg.toml");
  ASSERT_FALSE(negative);
  EXPECT_EQ(negative.error(), "cfg.toml:2: 'engine.shards' must be from 0 to 1024 (got -1)");

  auto no_time = parse_config("[timeouts]\ndata_end = 0\n", "cfg.toml");
  ASSERT_FALSE(no_time);
  EXPECT_EQ(no_time.error(), "cfg.toml:2: 'timeouts.data_end' must be more than 0 seconds");

  EXPECT_TRUE(parse_config("[engine]\ndrain_timeout = 0\n", "cfg.toml"));
  EXPECT_FALSE(parse_config("[pool]\nmessages_per_second = -1.0\n", "cfg.toml"));
  EXPECT_FALSE(parse_config("[pool]\nmessages_per_second = nan\n", "cfg.toml"));
}

TEST(app_config, SyntaxErrorsNameFileAndLine) {
  auto config = parse_config("[engine]\nshards = = 4\n", "cfg.toml");
  ASSERT_FALSE(config);
  EXPECT_TRUE(config.error().starts_with("cfg.toml:2: ")) << config.error();
}

TEST(app_config, LoadsAFileAndNamesItInErrors) {
  testing::TempDir dir;
  auto path = dir.write("ringmail.toml", "[pool]\nmax_connections = 9\n");
  auto config = load_config_file(path);
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->engine.pool.max_connections, 9u);

  auto bad = load_config_file(dir.write("bad.toml", "[pool]\nmax_connections = true\n"));
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().starts_with(dir.path("bad.toml") + ":2: ")) << bad.error();

  auto missing = load_config_file(dir.path("none.toml"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(),
            "cannot read config file '" + dir.path("none.toml") + "': No such file or directory");
}

// ringmail.example.toml documents every key with its default: parsing it must change nothing.
TEST(app_config, ExampleFileHoldsTheDefaults) {
  auto config = load_config_file(RINGMAIL_SOURCE_DIR "/ringmail.example.toml");
  ASSERT_TRUE(config) << config.error();
  expect_engine_options_equal(config->engine, engine::EngineOptions{});
  EXPECT_EQ(config->progress.mode, ProgressMode::kAuto);
  EXPECT_EQ(config->progress.plain_interval, engine::Seconds(5));
}

TEST(app_config, EveryKeyIsDocumented) {
  const std::string example = read_file(RINGMAIL_SOURCE_DIR "/ringmail.example.toml");
  const std::string table = read_file(RINGMAIL_SOURCE_DIR "/app/CONFIG.md");
  ASSERT_FALSE(example.empty());
  ASSERT_FALSE(table.empty());
  for (const std::string& key : config_keys()) {
    const std::string name = key.substr(key.find('.') + 1);
    EXPECT_NE(example.find(name + " = "), std::string::npos) << key << " not in the example";
    EXPECT_NE(table.find("| `" + key + "` |"), std::string::npos) << key << " not in CONFIG.md";
  }
}

TEST(app_config, ValidatesWhatASendNeeds) {
  Config config;  // no relay: delivery by MX, which needs nothing more here
  EXPECT_EQ(validate_for_send(config).error(),
            "no sender: give --from ADDRESS or set [send] from in the config");
  config.from = "bulk@example.com>\r\nRCPT TO:<x@y>";
  EXPECT_EQ(validate_for_send(config).error(),
            "invalid sender address 'bulk@example.com>\\r\\nRCPT TO:<x@y>': carriage return in "
            "address");
  config.from = "bulk@example.com";
  EXPECT_TRUE(validate_for_send(config));
  config.engine.helo_name = "mx\r\nQUIT";
  EXPECT_EQ(validate_for_send(config).error(),
            "invalid EHLO name 'mx\\r\\nQUIT': carriage return in domain");
}

}  // namespace
}  // namespace ringmail::app

namespace ringmail::app {
namespace {

TEST(app_config, DnsKeysAndRoutes) {
  auto config = parse_config(
      "[dns]\nservers = [\"127.0.0.1:5353\"]\nsmtp_port = 2525\nipv6 = \"off\"\n"
      "[routes]\n\"Example.TEST\" = \"127.0.0.1:2526\"\n",
      "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->engine.mx.resolver.servers, std::vector<std::string>{"127.0.0.1:5353"});
  EXPECT_EQ(config->mx_port, 2525);
  EXPECT_EQ(config->engine.mx.resolver.families, dns::ResolverOptions::Families::kIpv4Only);
  EXPECT_EQ(config->routes.at("example.test").relay, "127.0.0.1:2526");
  EXPECT_FALSE(config->routes.at("example.test").tls);
  auto table = parse_config("[routes]\n\"bank.test\" = { tls = \"verify\" }\n", "cfg.toml");
  ASSERT_TRUE(table) << table.error();
  EXPECT_EQ(table->routes.at("bank.test").relay, "");
  EXPECT_EQ(table->routes.at("bank.test").tls, engine::TlsPolicy::kVerify);
  EXPECT_TRUE(table->routes.at("bank.test").has_own_security());
  auto with_auth = parse_config(
      "[routes]\n\"s.test\" = { relay = \"127.0.0.1:465\", implicit = true, auth_user = \"u\", "
      "auth_password_env = \"RINGMAIL_ROUTE_PW\" }\n",
      "cfg.toml");
  ASSERT_TRUE(with_auth) << with_auth.error();
  EXPECT_EQ(with_auth->routes.at("s.test").implicit, true);
  EXPECT_EQ(with_auth->routes.at("s.test").auth.user, "u");
  auto bad = parse_config("[routes]\n\"a.test\" = 5\n", "cfg.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("cfg.toml:2: 'routes.a.test'"), std::string::npos) << bad.error();
}

TEST(app_config, MetricsSitesFeedTheEngineAndTheLabels) {
  auto config = parse_config("[metrics]\nsites = [\"gmail.com\", \"relay.example\"]\ntop_sites = 3\n",
                             "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->engine.site_metrics.sites,
            (std::vector<std::string>{"gmail.com", "relay.example"}));
  EXPECT_EQ(config->metrics.top_sites, 3u);
  EXPECT_EQ(parse_config("[metrics]\nsites = \"gmail.com\"\n", "cfg.toml").error(),
            "cfg.toml:2: 'metrics.sites' must be an array of domain or relay names");
  EXPECT_FALSE(parse_config("[metrics]\ntop_sites = 1000\n", "cfg.toml"));
}

TEST(app_config, TlsAndAuthKeys) {
  auto config = parse_config(
      "[tls]\nmode = \"verify\"\nca_file = \"/etc/ca.pem\"\nimplicit = true\n"
      "[auth]\nuser = \"shop\"\npassword_env = \"RINGMAIL_TEST_PW\"\n",
      "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->engine.security.tls.mode, engine::TlsPolicy::kVerify);
  EXPECT_EQ(config->engine.security.tls.ca_file, "/etc/ca.pem");
  EXPECT_TRUE(config->engine.security.implicit_tls);

  unsetenv("RINGMAIL_TEST_PW");
  auto missing = resolve_credentials(*config);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().find("RINGMAIL_TEST_PW"), std::string::npos);
  setenv("RINGMAIL_TEST_PW", "s3cret", 1);
  ASSERT_TRUE(resolve_credentials(*config));
  ASSERT_TRUE(config->engine.security.auth);
  EXPECT_EQ(config->engine.security.auth->username, "shop");
  EXPECT_EQ(config->engine.security.auth->password, "s3cret");
  unsetenv("RINGMAIL_TEST_PW");

  auto bad = parse_config("[tls]\nmode = \"sometimes\"\n", "cfg.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("cfg.toml:2"), std::string::npos) << bad.error();
}

// Relay routes that say nothing of their own share one profile without the relay's
// credentials (one TLS context per shard, not one per route); routes with settings of
// their own get their own; MX routes saying nothing stay on the default profile.
TEST(app_config, RelayRoutesShareOneProfileWithoutTheRelaysCredentials) {
  auto config = parse_config(
      "[routes]\n\"a.test\" = \"127.0.0.1:2601\"\n\"b.test\" = \"127.0.0.1:2602\"\n"
      "\"c.test\" = { relay = \"127.0.0.1:2603\", tls = \"required\" }\n"
      "\"d.test\" = { tls = \"verify\" }\n",
      "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  config->engine.security.auth = smtp::AuthCredentials{"shop", "relay-pw"};
  auto resolver = make_route_resolver(*config);
  ASSERT_TRUE(resolver) << resolver.error();
  const auto a = (*resolver)->route("a.test"), b = (*resolver)->route("b.test");
  const auto c = (*resolver)->route("c.test"), d = (*resolver)->route("d.test");
  EXPECT_NE(a.security_profile, 0);
  EXPECT_EQ(a.security_profile, b.security_profile);
  EXPECT_NE(c.security_profile, a.security_profile);
  EXPECT_NE(d.security_profile, 0);
  ASSERT_EQ(config->engine.route_security.size(), 3u);
  for (const auto& profile : config->engine.route_security) EXPECT_FALSE(profile.auth);
}

// Credentials with a TLS mode that does not check the certificate: one warning line that
// names where, never the password; none under verify or without credentials.
TEST(app_config, CredentialsWithoutVerifyAreWarnedOf) {
  Config config;
  EXPECT_FALSE(credentials_without_verify_warning(config));
  config.engine.security.auth = smtp::AuthCredentials{"shop", "s3cret-Pa55"};
  config.engine.security.tls.mode = engine::TlsPolicy::kRequired;
  auto warning = credentials_without_verify_warning(config);
  ASSERT_TRUE(warning);
  EXPECT_NE(warning->find("[auth] (tls required)"), std::string::npos) << *warning;
  EXPECT_NE(warning->find("only tls verify protects them"), std::string::npos) << *warning;
  EXPECT_EQ(warning->find("s3cret"), std::string::npos);
  config.engine.security.tls.mode = engine::TlsPolicy::kVerify;
  EXPECT_FALSE(credentials_without_verify_warning(config));
  engine::TransportSecurity route;
  route.auth = smtp::AuthCredentials{"u", "route-pw"};
  config.engine.route_security.push_back(route);  // opportunistic by default
  warning = credentials_without_verify_warning(config);
  ASSERT_TRUE(warning);
  EXPECT_NE(warning->find("1 route(s)"), std::string::npos) << *warning;
}

// The forms c-ares's ares_set_servers_ports_csv takes (checked against c-ares 1.18).
TEST(app_config, ValidatesDnsServers) {
  for (const char* ok : {"127.0.0.1", "127.0.0.1:5353", "192.0.2.53:53", "::1", "2001:db8::53",
                         "[::1]:53", "[2001:db8::53]:5353", "1.2.3.4:65535"}) {
    EXPECT_TRUE(validate_dns_server(ok)) << ok;
  }
  const std::string kind =
      " is not IPv4, IPv4:PORT, IPv6 or [IPv6]:PORT (numeric: a host name is not looked up)";
  EXPECT_EQ(validate_dns_server("bogus").error(), "\"bogus\"" + kind);
  EXPECT_EQ(validate_dns_server("").error(), "\"\"" + kind);
  for (const char* bad : {"dns.example:53", "1.2.3", "1.2.3.4.5", "[1.2.3.4]:53", "fe80::1%eth0",
                          " 1.2.3.4", "1.2.3.4 ", "[::1]x53", "::1]:53", "[::1"}) {
    auto refused = validate_dns_server(bad);
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error(), "\"" + std::string(bad) + "\"" + kind);
  }
  for (const char* bad : {"1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:99999",
                          "1.2.3.4:053x", "1.2.3.4:-5", "[::1]:", "[::1]:70000"}) {
    auto refused = validate_dns_server(bad);
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error(), "\"" + std::string(bad) + "\": the port must be from 1 to 65535");
  }
  EXPECT_EQ(validate_dns_server("[::1]").error(),
            "\"[::1]\": an IPv6 address in brackets needs a port ([::1]:53); without one, leave "
            "the brackets out (::1)");
}

TEST(app_config, DnsServersEntriesAreCheckedWhereTheyAreWritten) {
  auto config = parse_config("[dns]\nservers = [\"127.0.0.1:5353\", \"[::1]:53\", \"::1\"]\n",
                             "cfg.toml");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->engine.mx.resolver.servers,
            (std::vector<std::string>{"127.0.0.1:5353", "[::1]:53", "::1"}));

  auto bad = parse_config("# resolvers\n[dns]\nservers = [\"127.0.0.1\", \"bogus\"]\n", "cfg.toml");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(),
            "cfg.toml:3: 'dns.servers' entry \"bogus\" is not IPv4, IPv4:PORT, IPv6 or "
            "[IPv6]:PORT (numeric: a host name is not looked up)");
  auto port = parse_config("[dns]\nservers = [\"10.0.0.1:0\"]\n", "cfg.toml");
  ASSERT_FALSE(port);
  EXPECT_EQ(port.error(),
            "cfg.toml:2: 'dns.servers' entry \"10.0.0.1:0\": the port must be from 1 to 65535");
}

}  // namespace
}  // namespace ringmail::app

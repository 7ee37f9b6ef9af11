#include "app/cli.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace ringmail::app {
namespace {

struct Parsed {
  std::expected<SendFlags, int> flags;
  std::string out;
  std::string err;
};

Parsed parse(std::vector<const char*> args) {
  args.insert(args.begin(), "ringmail");
  std::ostringstream out, err;
  auto flags = parse_command_line(static_cast<int>(args.size()), args.data(), out, err);
  return {std::move(flags), out.str(), err.str()};
}

TEST(app_cli, ParsesEveryOptionOfSend) {
  auto p = parse({"send",
                  "--relay",
                  "127.0.0.1:2525",
                  "--from",
                  "a@b.c",
                  "--message",
                  "m.eml",
                  "--recipients",
                  "r.csv",
                  "--connections",
                  "8",
                  "--rcpt-per-txn",
                  "50",
                  "--shards",
                  "2",
                  "--config",
                  "x.toml",
                  "--summary",
                  "json",
                  "--no-pipelining",
                  "--helo",
                  "mta.example",
                  "--drain-timeout",
                  "1.5",
                  "--max-msgs-per-conn",
                  "9",
                  "--rate",
                  "100",
                  "--quiet"});
  ASSERT_TRUE(p.flags) << p.err;
  const SendFlags& f = *p.flags;
  EXPECT_EQ(f.relay, "127.0.0.1:2525");
  EXPECT_EQ(f.from, "a@b.c");
  EXPECT_EQ(f.message_path, "m.eml");
  EXPECT_EQ(f.recipients_path, "r.csv");
  EXPECT_EQ(f.connections, 8u);
  EXPECT_EQ(f.recipients_per_transaction, 50u);
  EXPECT_EQ(f.shards, 2u);
  EXPECT_EQ(f.config_path, "x.toml");
  EXPECT_EQ(f.summary, SummaryFormat::kJson);
  EXPECT_TRUE(f.no_pipelining);
  EXPECT_EQ(f.helo, "mta.example");
  EXPECT_EQ(f.drain_timeout_s, 1.5);
  EXPECT_EQ(f.max_messages_per_connection, 9u);
  EXPECT_EQ(f.messages_per_second, 100.0);
  EXPECT_TRUE(f.quiet);
}

TEST(app_cli, UnsetOptionsStayUnset) {
  auto p = parse({"send", "--message", "m.eml", "--recipients", "r.txt"});
  ASSERT_TRUE(p.flags) << p.err;
  EXPECT_FALSE(p.flags->relay);
  EXPECT_FALSE(p.flags->connections);
  EXPECT_FALSE(p.flags->drain_timeout_s);
  EXPECT_FALSE(p.flags->no_pipelining);
  EXPECT_EQ(p.flags->summary, SummaryFormat::kText);
}

TEST(app_cli, HelpDocumentsEveryOptionAndExitsZero) {
  for (auto args :
       {std::vector<const char*>{"--help"}, std::vector<const char*>{"send", "--help"}}) {
    auto p = parse(args);
    ASSERT_FALSE(p.flags);
    EXPECT_EQ(p.flags.error(), 0);
    for (const char* option :
         {"--relay", "--from", "--message", "--recipients", "--connections", "--rcpt-per-txn",
          "--shards", "--config", "--summary", "--no-pipelining", "--helo", "--drain-timeout",
          "--max-msgs-per-conn", "--rate", "--quiet"}) {
      EXPECT_NE(p.out.find(option), std::string::npos) << option << " missing from " << args[0];
    }
  }
}

TEST(app_cli, UsageErrorsExitTwo) {
  EXPECT_EQ(parse({}).flags.error(), 2);
  EXPECT_EQ(parse({"send", "--message", "m.eml"}).flags.error(), 2);  // --recipients missing
  EXPECT_EQ(
      parse({"send", "--message", "m", "--recipients", "r", "--summary", "xml"}).flags.error(), 2);
  EXPECT_EQ(
      parse({"send", "--message", "m", "--recipients", "r", "--connections", "0"}).flags.error(),
      2);
  EXPECT_EQ(
      parse({"send", "--message", "m", "--recipients", "r", "--shards", "many"}).flags.error(), 2);
  EXPECT_EQ(parse({"send", "--message", "m", "--recipients", "r", "--bogus"}).flags.error(), 2);
  EXPECT_EQ(parse({"fly"}).flags.error(), 2);
}

TEST(app_cli, FlagsOverrideTheConfig) {
  Config config;
  config.relay = "config:25";
  config.from = "config@example.com";
  config.engine.pool.max_connections = 3;
  config.engine.pool.max_recipients_per_transaction = 7;

  SendFlags flags;
  flags.relay = "flag:2525";
  flags.connections = 40;
  flags.drain_timeout_s = 0;
  flags.no_pipelining = true;
  flags.quiet = true;
  apply_flags(flags, config);

  EXPECT_EQ(config.relay, "flag:2525");
  EXPECT_EQ(config.from, "config@example.com");  // not given: the config's value stays
  EXPECT_EQ(config.engine.pool.max_connections, 40u);
  EXPECT_EQ(config.engine.pool.max_recipients_per_transaction, 7u);
  EXPECT_EQ(config.engine.drain_timeout, engine::Seconds(0));
  EXPECT_FALSE(config.engine.pipelining);
  EXPECT_EQ(config.progress.mode, ProgressMode::kOff);
}

std::expected<Command, int> parse_any(std::vector<const char*> args) {
  args.insert(args.begin(), "ringmail");
  std::ostringstream out, err;
  return parse_command(static_cast<int>(args.size()), args.data(), out, err);
}

TEST(app_cli, ParsesTheStorageCommands) {
  auto e = parse_any({"enqueue", "--db", "q.db", "--from", "a@b.c", "--message", "m.eml",
                      "--recipients", "r.txt", "--campaign", "spring", "--send-at",
                      "2025-07-01T09:00:00Z", "--idempotency-key", "k1"});
  ASSERT_TRUE(e);
  const auto& ef = std::get<EnqueueFlags>(*e);
  EXPECT_EQ(ef.db, "q.db");
  EXPECT_EQ(ef.campaign, "spring");
  EXPECT_EQ(ef.send_at, "2025-07-01T09:00:00Z");
  EXPECT_EQ(ef.idempotency_key, "k1");

  auto r = parse_any({"run", "--db", "q.db", "--until-done", "--relay", "h:25", "--summary", "json"});
  ASSERT_TRUE(r);
  const auto& rf = std::get<RunFlags>(*r);
  EXPECT_TRUE(rf.until_done);
  EXPECT_EQ(rf.relay, "h:25");
  EXPECT_EQ(rf.summary, SummaryFormat::kJson);

  auto s = parse_any({"status", "--db", "q.db", "--json", "--campaign", "c"});
  ASSERT_TRUE(s);
  EXPECT_TRUE(std::get<StatusFlags>(*s).json);

  auto add = parse_any({"suppress", "add", "x@y.z", "w@y.z", "--db", "q.db"});
  ASSERT_TRUE(add);
  EXPECT_EQ(std::get<SuppressFlags>(*add).action, SuppressAction::kAdd);
  EXPECT_EQ(std::get<SuppressFlags>(*add).addresses.size(), 2u);
  auto imp = parse_any({"suppress", "--db", "q.db", "import", "list.txt"});
  ASSERT_TRUE(imp);
  EXPECT_EQ(std::get<SuppressFlags>(*imp).action, SuppressAction::kImport);
  EXPECT_EQ(std::get<SuppressFlags>(*imp).file, "list.txt");

  EXPECT_EQ(parse_any({"enqueue", "--db", "q.db"}).error(), 2);  // --message missing
  EXPECT_EQ(parse_any({"suppress"}).error(), 2);                 // add|remove|list|import
}

// `scripts/demo --rcpt-per-txn 1` appends to the demo's own options: the later one wins.
TEST(app_cli, ALaterValueOverridesAnEarlierOne) {
  auto p = parse({"send", "--message", "m.eml", "--recipients", "r.txt", "--connections", "20",
                  "--rcpt-per-txn", "10", "--db", "demo.db", "--rcpt-per-txn", "1",
                  "--connections", "5", "--relay", "a:25", "--relay", "b:25", "--rate", "3",
                  "--rate", "0"});
  ASSERT_TRUE(p.flags) << p.err;
  EXPECT_EQ(p.flags->recipients_per_transaction, 1u);
  EXPECT_EQ(p.flags->connections, 5u);
  EXPECT_EQ(p.flags->relay, "b:25");
  EXPECT_EQ(p.flags->messages_per_second, 0.0);
  EXPECT_EQ(p.flags->db, "demo.db");

  auto r = parse_any({"run", "--db", "a.db", "--db", "b.db", "--connections", "2",
                      "--connections", "3", "--summary", "json", "--summary", "text"});
  ASSERT_TRUE(r);
  EXPECT_EQ(std::get<RunFlags>(*r).db, "b.db");
  EXPECT_EQ(std::get<RunFlags>(*r).connections, 3u);
  EXPECT_EQ(std::get<RunFlags>(*r).summary, SummaryFormat::kText);

  auto s = parse_any({"status", "--db", "a.db", "--domains", "5", "--db", "b.db"});
  ASSERT_TRUE(s);
  EXPECT_EQ(std::get<StatusFlags>(*s).db, "b.db");
  auto add = parse_any({"suppress", "add", "x@y.z", "w@y.z", "--reason", "a", "--reason", "b"});
  ASSERT_TRUE(add);
  EXPECT_EQ(std::get<SuppressFlags>(*add).addresses.size(), 2u);
  EXPECT_EQ(std::get<SuppressFlags>(*add).reason, "b");

  // Repeatable options keep every value; a bad later value is still an error.
  auto dns = parse({"send", "--message", "m", "--recipients", "r", "--dns-server", "1.1.1.1:53",
                    "--dns-server", "8.8.8.8:53"});
  ASSERT_TRUE(dns.flags) << dns.err;
  EXPECT_EQ(dns.flags->routing.dns_servers.size(), 2u);
  EXPECT_EQ(parse({"send", "--message", "m", "--recipients", "r", "--connections", "5",
                   "--connections", "0"})
                .flags.error(),
            2);
  // --db and --no-db still exclude each other (scripts/demo drops its --db for --no-db).
  EXPECT_EQ(parse({"send", "--message", "m", "--recipients", "r", "--db", "x.db", "--no-db"})
                .flags.error(),
            2);
}

TEST(app_cli, SuppressSubcommandsTakeConfigAndDb) {
  for (const char* sub : {"list", "add", "remove", "import"}) {
    std::vector<const char*> args = {"suppress", sub};
    if (std::string(sub) == "add" || std::string(sub) == "remove") args.push_back("x@y.z");
    if (std::string(sub) == "import") args.push_back("list.txt");
    args.insert(args.end(), {"--config", "ringmail.toml", "--db", "q.db"});
    auto s = parse_any(args);
    ASSERT_TRUE(s) << sub;
    EXPECT_EQ(std::get<SuppressFlags>(*s).config_path, "ringmail.toml") << sub;
    EXPECT_EQ(std::get<SuppressFlags>(*s).db, "q.db") << sub;
  }
  auto parent = parse_any({"suppress", "--config", "c.toml", "list"});
  ASSERT_TRUE(parent);
  EXPECT_EQ(std::get<SuppressFlags>(*parent).config_path, "c.toml");
}

TEST(app_cli, StatusDomainsDefaultsToTwentyAndZeroMeansAll) {
  auto d = parse_any({"status", "--db", "q.db"});
  ASSERT_TRUE(d);
  EXPECT_EQ(std::get<StatusFlags>(*d).domains, 20u);
  auto all = parse_any({"status", "--db", "q.db", "--domains", "0"});
  ASSERT_TRUE(all);
  EXPECT_EQ(std::get<StatusFlags>(*all).domains, 0u);
  EXPECT_EQ(parse_any({"status", "--domains", "some"}).error(), 2);
}

}  // namespace
}  // namespace ringmail::app

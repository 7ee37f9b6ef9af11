#include "app/send_plan.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/app/temp_dir.h"

namespace ringmail::app {
namespace {

using testing::TempDir;

struct Files {
  TempDir dir;
  SendFlags flags;
  Files() {
    flags.message_path = dir.write("m.eml", "Subject: hi\n\nbody\n");
    flags.recipients_path = dir.write("r.txt", "# list\na@b.example\nc@d.example\n");
    flags.relay = "127.0.0.1:2525";
    flags.from = "bulk@sender.example";
  }
};

TEST(app_send_plan, PreparesEverythingBeforeSending) {
  Files f;
  f.flags.config_path =
      f.dir.write("c.toml", "[pool]\nmax_connections = 4\n[send]\nfrom = \"x@y.z\"\n");
  f.flags.connections = 6;
  auto plan = prepare_send(f.flags);
  ASSERT_TRUE(plan) << plan.error();
  ASSERT_TRUE(plan->resolver);
  const engine::Destination relay = plan->resolver->route("example.test");
  EXPECT_EQ(relay.host, "127.0.0.1");
  EXPECT_EQ(relay.port, 2525);
  EXPECT_TRUE(relay.mx_domain.empty());
  EXPECT_EQ(plan->config.from, "bulk@sender.example");  // the flag wins over the file
  EXPECT_EQ(plan->config.engine.pool.max_connections, 6u);
  EXPECT_EQ(plan->estimated_total, 2u);
  ASSERT_TRUE(plan->body);
  EXPECT_NE(plan->body->find("@sender.example>\r\n"), std::string::npos) << *plan->body;
  auto first = plan->recipients.next();
  ASSERT_TRUE(first && *first);
  EXPECT_EQ((*first)->address, "a@b.example");
}

TEST(app_send_plan, StopsAtTheFirstProblem) {
  {
    // No relay is not a problem: every domain then goes to its MX.
    Files f;
    f.flags.relay.reset();
    auto plan = prepare_send(f.flags);
    ASSERT_TRUE(plan) << plan.error();
    EXPECT_EQ(plan->resolver->route("Example.TEST").mx_domain, "example.test");
  }
  {
    Files f;
    f.flags.relay = "127.0.0.1:99999";
    EXPECT_EQ(prepare_send(f.flags).error(),
              "invalid relay '127.0.0.1:99999': port must be a number from 1 to 65535");
  }
  {
    Files f;
    f.flags.config_path = f.dir.path("none.toml");
    EXPECT_TRUE(prepare_send(f.flags).error().starts_with("cannot read config file"));
  }
  {
    Files f;
    f.flags.message_path = f.dir.write("empty.eml", "");
    EXPECT_TRUE(prepare_send(f.flags).error().ends_with("the message is empty"));
  }
  {
    Files f;
    f.flags.recipients_path = f.dir.path("none.txt");
    EXPECT_TRUE(prepare_send(f.flags).error().starts_with("cannot read recipients file"));
  }
}

TEST(app_send_plan, MessageIdDomainPrefersARealEhloName) {
  Config config;
  config.from = "bulk@sender.example";
  EXPECT_EQ(message_id_domain(config), "sender.example");  // "localhost" is not a real name
  config.engine.helo_name = "mta1.sender.example";
  EXPECT_EQ(message_id_domain(config), "mta1.sender.example");
  config.engine.helo_name = "[192.0.2.1]";
  EXPECT_EQ(message_id_domain(config), "sender.example");
}

}  // namespace
}  // namespace ringmail::app

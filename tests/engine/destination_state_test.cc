// What the engine tells its outcome sink about a destination's state: paused once its
// only host refused three connections (with the pause's end, the reason and the domain it
// deferred), up at the first connection that reaches EHLO's reply. Real peers on loopback.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <map>
#include <mutex>

#include "tests/engine/engine_harness.h"
#include "tests/support/loopback_port.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

class StateSink final : public engine::OutcomeSink {
 public:
  void on_transaction_finished(unsigned, const smtp::TransactionOutcome&) override {}
  void on_destination_state(unsigned, const engine::DestinationStateChange& change) override {
    std::lock_guard lock(mutex_);
    changes_.push_back(change);
  }
  std::vector<engine::DestinationStateChange> changes() const {
    std::lock_guard lock(mutex_);
    return changes_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<engine::DestinationStateChange> changes_;
};

engine::DeliverySnapshot run(engine::EngineOptions options, uint16_t port, size_t items,
                             StateSink& sink) {
  engine::StaticRelayResolver resolver(engine::Destination{"127.0.0.1", port});
  VectorJobSource source(make_items(items, 200, "Example.TEST"));
  engine::Engine engine(options, resolver, &sink);
  engine.start(source);
  EXPECT_TRUE(engine.wait_for(std::chrono::seconds(30)));
  return engine.snapshot();
}

TEST(DestinationState, ARefusingRelayIsReportedPausedOnceWithItsDomain) {
  engine::EngineOptions options = test_options();
  options.pool.dead_destination_pause = engine::Seconds(600);
  StateSink sink;
  const auto before = std::chrono::system_clock::now();
  const uint16_t port = unused_loopback_port();
  engine::DeliverySnapshot counts = run(options, port, 40, sink);
  // Until one connection works, no more are opened at once than it takes to find the
  // host dead: 3, whatever max_connections says.
  EXPECT_EQ(counts.connections_opened, 3u);
  auto changes = sink.changes();
  ASSERT_GE(changes.size(), 1u);
  size_t with_domain = 0;
  for (const auto& c : changes) {
    EXPECT_EQ(c.name, "127.0.0.1:" + std::to_string(port));  // a relay: host and port
    EXPECT_TRUE(c.paused);
    EXPECT_GE(c.paused_until, before + std::chrono::seconds(590));
    EXPECT_EQ(c.paused_until, changes.front().paused_until);  // one pause, one end
    EXPECT_NE(c.reason.text.find("refused"), std::string::npos) << c.reason.text;
    for (const auto& d : c.domains) {
      EXPECT_EQ(d, "example.test");  // lower-cased, as the database stores it
      ++with_domain;
    }
  }
  EXPECT_EQ(with_domain, 1u);   // the domain once per pause, not per transaction
  EXPECT_LE(changes.size(), 2u);  // the transition, then the domain
}

TEST(DestinationState, EveryDomainOfAGivenBackTransactionIsReported) {
  // Through a relay one transaction carries several domains; each has queued recipients
  // that are to wait for the pause, not only the domain of the first recipient.
  engine::EngineOptions options = test_options();
  options.pool.dead_destination_pause = engine::Seconds(600);
  options.pool.max_recipients_per_transaction = 9;  // every transaction starts with a.test
  const std::array<std::string, 3> domains = {"a.test", "B.test", "c.test"};
  std::vector<engine::DeliveryItem> items = make_items(450);
  for (size_t i = 0; i < items.size(); ++i)
    items[i].recipient = "r" + std::to_string(i) + "@" + domains[i % 3];
  StateSink sink;
  engine::StaticRelayResolver resolver(engine::Destination{"127.0.0.1", unused_loopback_port()});
  VectorJobSource source(std::move(items));
  {
    engine::Engine engine(options, resolver, &sink);
    engine.start(source);
    ASSERT_TRUE(engine.wait_for(std::chrono::seconds(30)));
  }
  std::map<std::string, int> reported;
  for (const auto& c : sink.changes())
    for (const auto& d : c.domains) ++reported[d];
  EXPECT_EQ(reported, (std::map<std::string, int>{{"a.test", 1}, {"b.test", 1}, {"c.test", 1}}));
}

TEST(DestinationState, AWorkingRelayIsReportedUpOnce) {
  auto server = SmtpSinkProcess::start();
  ASSERT_TRUE(server) << server.error();
  StateSink sink;
  engine::DeliverySnapshot counts = run(test_options(), (*server)->port(), 20, sink);
  EXPECT_GE(counts.connections_opened, 1u);
  auto changes = sink.changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].name, "127.0.0.1:" + std::to_string((*server)->port()));
  EXPECT_FALSE(changes[0].paused);
  EXPECT_TRUE(changes[0].domains.empty());
}

}  // namespace
}  // namespace ringmail::test

// Unit tests of the engine's pure parts: completion tokens, transaction grouping, the
// connection table's generations and the pool's rate limit.
#include <gtest/gtest.h>

#include <map>

#include "engine/completion_token.h"
#include "engine/connection.h"
#include "engine/destination_pool.h"
#include "engine/transaction_batcher.h"

namespace ringmail::engine {
namespace {

TEST(CompletionToken, RoundTrips) {
  CompletionToken t{OpKind::kRecv, 123456, 0xABCDEF};
  CompletionToken d = CompletionToken::decode(t.encode());
  EXPECT_EQ(d.op, OpKind::kRecv);
  EXPECT_EQ(d.slot, 123456u);
  EXPECT_EQ(d.generation, 0xABCDEFu);
  // Generations wrap at 24 bits.
  EXPECT_EQ(CompletionToken::decode(CompletionToken{OpKind::kSend, 1, 0x1000001}.encode()).generation, 1u);
}

TEST(ConnectionTable, StaleCompletionIsNotFound) {
  ConnectionTable table;
  uint32_t slot = table.acquire();
  table[slot].state = Connection::State::kOpen;
  uint32_t generation = table[slot].generation;
  EXPECT_NE(table.find(slot, generation), nullptr);
  table.release(slot);
  EXPECT_EQ(table.find(slot, generation), nullptr);  // freed
  uint32_t again = table.acquire();
  EXPECT_EQ(again, slot);  // the slot is reused ...
  table[again].state = Connection::State::kOpen;
  EXPECT_EQ(table.find(slot, generation), nullptr);  // ... but the old completion is dropped
  EXPECT_NE(table.find(slot, table[again].generation), nullptr);
  EXPECT_EQ(table.find(999, 0), nullptr);
}

void add_to(TransactionBatcher& batcher, DeliveryItem item, const Destination& destination) {
  batcher.add(std::move(item), destination, destination.key());
}

TEST(TransactionBatcher, UrgentWorkIsEmittedAtOnceNotHeldToFillItsTransaction) {
  std::vector<ShardJob> out;
  TransactionBatcher batcher(100, [&](ShardJob&& j) { out.push_back(std::move(j)); });
  auto bulk = std::make_shared<const std::string>("bulk\r\n");
  auto receipt = std::make_shared<const std::string>("receipt\r\n");
  Destination relay{"127.0.0.1", 25};
  batcher.add({"s@a", "c1@b", bulk, 1}, relay, relay.key());
  batcher.add({"s@a", "order@b", receipt, 2, /*urgent=*/true}, relay, relay.key());
  ASSERT_EQ(out.size(), 1u);  // the receipt, while the bulk transaction still fills
  EXPECT_TRUE(out[0].transaction.urgent);
  EXPECT_EQ(out[0].transaction.recipients, std::vector<std::string>{"order@b"});
  batcher.flush();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[1].transaction.urgent);
}

TEST(TransactionBatcher, GroupsIdenticalContentUpToTheLimit) {
  std::vector<ShardJob> out;
  TransactionBatcher batcher(3, [&](ShardJob&& j) { out.push_back(std::move(j)); });
  auto body = std::make_shared<const std::string>("x\r\n");
  Destination relay{"127.0.0.1", 25};
  for (int i = 0; i < 7; ++i)
    batcher.add({"s@a", "r" + std::to_string(i) + "@b", body, uint64_t(100 + i)}, relay, relay.key());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].transaction.recipients.size(), 3u);
  batcher.flush();
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].transaction.recipients, std::vector<std::string>{"r6@b"});
  EXPECT_EQ(out[0].transaction.recipient_tags.size(), 3u);
  EXPECT_NE(out[0].transaction.id, out[1].transaction.id);
  EXPECT_EQ(out[1].transaction.recipient_tags, (std::vector<uint64_t>{103, 104, 105}));
}

TEST(TransactionBatcher, PersonalisedContentIsOneTransactionPerMessage) {
  std::vector<ShardJob> out;
  TransactionBatcher batcher(100, [&](ShardJob&& j) { out.push_back(std::move(j)); });
  Destination relay{"127.0.0.1", 25};
  for (int i = 0; i < 5; ++i)
    batcher.add({"s@a", "r@b", std::make_shared<const std::string>("body " + std::to_string(i))}, relay, relay.key());
  batcher.flush();
  EXPECT_EQ(out.size(), 5u);
}

TEST(TransactionBatcher, SeparatesDestinationsAndSenders) {
  std::vector<ShardJob> out;
  TransactionBatcher batcher(100, [&](ShardJob&& j) { out.push_back(std::move(j)); });
  auto body = std::make_shared<const std::string>("x\r\n");
  add_to(batcher, {"s@a", "r1@b", body}, Destination{"127.0.0.1", 25});
  add_to(batcher, {"s@a", "r2@b", body}, Destination{"127.0.0.2", 25});
  add_to(batcher, {"t@a", "r3@b", body}, Destination{"127.0.0.1", 25});
  add_to(batcher, {"s@a", "r4@b", body}, Destination{"127.0.0.1", 25});
  batcher.flush();
  ASSERT_EQ(out.size(), 3u);
  size_t total = 0;
  for (auto& j : out) total += j.transaction.recipients.size();
  EXPECT_EQ(total, 4u);
}

TEST(TransactionBatcher, BoundsOpenTransactions) {
  std::vector<ShardJob> out;
  TransactionBatcher batcher(100, [&](ShardJob&& j) { out.push_back(std::move(j)); }, 2);
  auto body = std::make_shared<const std::string>("x\r\n");
  for (int i = 0; i < 3; ++i)
    add_to(batcher, {"s@a", "r@b", body}, Destination{"127.0.0." + std::to_string(i + 1), 25});
  EXPECT_EQ(out.size(), 2u);  // the third destination forced a flush of the first two
}

TEST(DestinationPool, ParsesNumericAddresses) {
  PoolLimits limits;
  EXPECT_TRUE(DestinationPool(Destination{"127.0.0.1", 25}, limits).address_valid());
  EXPECT_TRUE(DestinationPool(Destination{"::1", 25}, limits).address_valid());
  EXPECT_FALSE(DestinationPool(Destination{"mail.example.test", 25}, limits).address_valid());
  EXPECT_EQ(Destination({"::1", 2525}).key(), "[::1]:2525");
}

TEST(Destination, KeyNamesTheTlsNameWhenItIsNotTheAddress) {
  EXPECT_EQ(Destination({"127.0.0.1", 25, "mx.a.test"}).key(), "127.0.0.1:25 (mx.a.test)");
  EXPECT_NE(Destination({"127.0.0.1", 25, "mx.a.test"}).key(),
            Destination({"127.0.0.1", 25, "mx.b.test"}).key());
  EXPECT_EQ(Destination({"127.0.0.1", 25, "127.0.0.1"}).key(), "127.0.0.1:25");
  EXPECT_EQ(Destination({"127.0.0.1", 25, "MX.A.test"}).key(), "127.0.0.1:25 (mx.a.test)");
  Destination mx;
  mx.mx_domain = "a.test";
  mx.tls_name = "ignored.test";  // an MX destination's names are its exchangers'
  EXPECT_EQ(mx.key(), "mx:a.test:25");
}

TEST(DestinationPool, RateLimitSpendsAndRefillsTokens) {
  PoolLimits limits;
  limits.messages_per_second = 10;
  DestinationPool pool(Destination{"127.0.0.1", 25}, limits);
  auto t0 = Clock::now();
  int taken = 0;
  while (pool.take_send_token(t0)) ++taken;
  EXPECT_EQ(taken, 10);  // one second's burst
  pool.queue.push_back({});
  auto due = pool.next_token_time(t0);
  EXPECT_GT(due, t0);
  EXPECT_LE(due, t0 + std::chrono::milliseconds(101));
  EXPECT_TRUE(pool.take_send_token(t0 + std::chrono::milliseconds(100)));
  EXPECT_FALSE(pool.take_send_token(t0 + std::chrono::milliseconds(100)));
}

TEST(DestinationPool, FailsOverToTheNextHostInOrder) {
  std::vector<PoolHost> hosts(3);
  hosts[0].address = "127.0.0.2";
  hosts[0].preference = 10;
  hosts[1].address = "not numeric";
  hosts[1].preference = 20;
  hosts[2].address = "127.0.0.3";
  hosts[2].preference = 30;
  DestinationPool pool(Destination{"", 25}, std::move(hosts), PoolLimits{});
  auto t0 = Clock::now();
  ASSERT_TRUE(pool.address_valid());
  EXPECT_EQ(pool.pick_host(t0), 0u);
  pool.record_connection_failure(0, {}, t0);  // with several hosts, one failure moves on
  EXPECT_EQ(pool.pick_host(t0), 2u);          // skipping the unusable one
  EXPECT_FALSE(pool.dead(t0));
  pool.record_connection_failure(2, {}, t0);
  EXPECT_TRUE(pool.dead(t0));
  // After the probe interval the preferred host is tried again first.
  EXPECT_EQ(pool.pick_host(t0 + DestinationPool::kDeadProbeInterval), 0u);
}

TEST(DestinationPool, EqualPreferencesTakeTurns) {
  std::vector<PoolHost> hosts(3);
  hosts[0].address = "127.0.0.2";
  hosts[1].address = "127.0.0.3";
  hosts[2].address = "127.0.0.4";
  hosts[0].preference = hosts[1].preference = 10;
  hosts[2].preference = 20;
  DestinationPool pool(Destination{"", 25}, std::move(hosts), PoolLimits{});
  auto t0 = Clock::now();
  std::map<size_t, int> picked;
  for (int i = 0; i < 10; ++i) {
    // Asking whether the pool is dead or failing must not take a turn.
    EXPECT_FALSE(pool.dead(t0));
    EXPECT_FALSE(pool.failing(t0));
    ++picked[*pool.pick_host(t0)];
  }
  EXPECT_EQ(picked[0], 5);
  EXPECT_EQ(picked[1], 5);
  EXPECT_EQ(picked[2], 0);  // a worse preference only when the best ones are down
  pool.record_connection_failure(0, {}, t0);
  pool.record_connection_failure(1, {}, t0);
  EXPECT_EQ(pool.pick_host(t0), 2u);
}

TEST(DestinationPool, MarkDownSetsEveryHostAside) {
  std::vector<PoolHost> hosts(2);
  hosts[0].address = "127.0.0.2";
  hosts[1].address = "127.0.0.3";
  DestinationPool pool(Destination{"", 25}, std::move(hosts), PoolLimits{});
  auto t0 = Clock::now();
  smtp::Reply why;
  why.code = 535;
  pool.mark_down(why, t0);
  EXPECT_TRUE(pool.dead(t0));
  EXPECT_EQ(pool.last_failure().code, 535);
}

TEST(DestinationPool, RateBelowOnePerSecondStillSends) {
  PoolLimits limits;
  limits.messages_per_second = 0.5;
  DestinationPool pool(Destination{"127.0.0.1", 25}, limits);
  auto t0 = Clock::now();
  EXPECT_FALSE(pool.take_send_token(t0));  // starts with half a token
  EXPECT_TRUE(pool.take_send_token(t0 + std::chrono::seconds(1)));
  EXPECT_FALSE(pool.take_send_token(t0 + std::chrono::seconds(2)));
  EXPECT_TRUE(pool.take_send_token(t0 + std::chrono::seconds(3)));
}

TEST(DestinationPool, DeadAfterRepeatedFailuresAndRevivedByASuccess) {
  DestinationPool pool(Destination{"127.0.0.1", 25}, PoolLimits{});
  smtp::Reply why;
  why.text = "refused";
  auto t0 = Clock::now();
  EXPECT_FALSE(pool.failing(t0));
  for (unsigned i = 0; i + 1 < DestinationPool::kDeadAfterFailures; ++i) pool.record_connection_failure(0, why, t0);
  EXPECT_TRUE(pool.failing(t0));
  EXPECT_FALSE(pool.dead(t0));
  pool.record_connection_failure(0, why, t0);
  EXPECT_TRUE(pool.dead(t0));
  EXPECT_EQ(pool.last_failure().text, "refused");
  pool.record_connection_ready(0);
  EXPECT_FALSE(pool.dead(t0));
  EXPECT_FALSE(pool.failing(t0));
}

TEST(DestinationPool, DeadDestinationIsProbedAgainLater) {
  DestinationPool pool(Destination{"127.0.0.1", 25}, PoolLimits{});
  auto t0 = Clock::now();
  for (unsigned i = 0; i < DestinationPool::kDeadAfterFailures; ++i) pool.record_connection_failure(0, {}, t0);
  EXPECT_TRUE(pool.dead(t0 + DestinationPool::kDeadProbeInterval / 2));
  auto later = t0 + DestinationPool::kDeadProbeInterval;
  EXPECT_FALSE(pool.dead(later));  // one probe may go
  pool.record_connection_failure(0, {}, later);  // ... and fails
  EXPECT_TRUE(pool.dead(later));
}

}  // namespace
}  // namespace ringmail::engine

// Destination-level backoff in the database: the schema's migration to version 3, the
// queries that record a paused destination and postpone its domains, and the storage
// thread applying the engine's DestinationStateChange in its grouped commit.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "smtp/message_body.h"
#include "storage/queue_store.h"
#include "storage/schema.h"
#include "storage/storage_thread.h"
#include "tests/storage/other_connection.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

class DestinationStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = db_.path();
    schedule_.first_delay = Seconds(1);
    schedule_.jitter = 0;
  }

  void enqueue(size_t n, const std::string& domain) { testing::enqueue_db(options_, n, domain); }

  int64_t query(const std::string& sql) { return testing::query_db(options_, sql); }

  testing::TempDb db_;
  StorageOptions options_;
  RetrySchedule schedule_;
};

TEST_F(DestinationStateTest, AVersion2DatabaseIsMigratedToVersion3) {
  enqueue(3, "a.test");
  {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->connection().exec(std::string(testing::kUndoVersion5) +
                                         "DROP TABLE destinations; DROP INDEX recipients_by_domain;"
                                         "DROP TABLE urgent_due;"
                                         "UPDATE schema_version SET version = 2"));
  }
  // Reopening migrated it to version 3, and on to the current one.
  EXPECT_EQ(query("SELECT version FROM schema_version"), current_schema_version());
  EXPECT_EQ(query("SELECT count(*) FROM sqlite_master WHERE name = 'destinations'"), 1);
  EXPECT_EQ(query("SELECT count(*) FROM pragma_index_info('recipients_by_domain')"), 1);
  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 3);
  EXPECT_EQ(query("SELECT count(*) FROM destinations"), 0);
}

TEST_F(DestinationStateTest, PostponingADomainUsesItsIndex) {
  enqueue(1, "a.test");
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store);
  auto st = store->connection().prepare(
      "EXPLAIN QUERY PLAN UPDATE recipient_rows INDEXED BY recipients_by_domain SET "
      "next_attempt_at = 1 WHERE domain = 'a.test' AND rowid > 5 AND rowid <= 10005 "
      "AND state IN ('queued', 'deferred') AND next_attempt_at < 1");
  ASSERT_TRUE(st);
  std::string plan;
  while (*st->step()) plan += st->column_string(3) + "\n";
  // A seek to the chunk, not a walk of the domain's rows from its first.
  EXPECT_NE(plan.find("recipients_by_domain (domain=? AND rowid>? AND rowid<?)"),
            std::string::npos)
      << plan;
}

// A paused domain's rows move in chunks of 10,000 (a bounded statement journal), all of
// them: the due ones of that domain, never another domain's nor a final one.
TEST_F(DestinationStateTest, PostponingMovesEveryChunkOfABigDomain) {
  enqueue(12000, "a.test");
  enqueue(50, "b.test");
  enqueue(13000, "a.test");
  const int64_t until = unix_now_ms() + 600'000;
  {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->connection().exec(
        "UPDATE recipient_rows SET state = 'delivered' WHERE id IN (1, 9999, 10000, 25050)"));
    auto moved = store->postpone_domain("relay", "a.test", until);
    ASSERT_TRUE(moved) << moved.error().message;
    EXPECT_EQ(*moved, 24996u);
  }
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE next_attempt_at = " +
                  std::to_string(until)),
            24996);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE domain = 'b.test' AND "
                  "next_attempt_at = " + std::to_string(until)),
            0);
}

// `send` limits the store to its own message: its relay's pause says nothing of the route
// other messages take to the same domain, so their recipients keep their due time.
TEST_F(DestinationStateTest, ALimitedStorePostponesOnlyItsOwnMessage) {
  enqueue(3, "a.test");
  enqueue(4, "a.test");
  const int64_t mine = query("SELECT max(id) FROM messages");
  const int64_t until = unix_now_ms() + 600'000;
  {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    ASSERT_TRUE(store);
    store->limit_to_message(mine);
    auto moved = store->postpone_domain("relay", "a.test", until);
    ASSERT_TRUE(moved) << moved.error().message;
    EXPECT_EQ(*moved, 4u);
  }
  const std::string of_mine = "message_id = " + std::to_string(mine);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE " + of_mine + " AND next_attempt_at = " +
                  std::to_string(until)),
            4);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE NOT " + of_mine + " AND next_attempt_at < " +
                  std::to_string(until)),
            3);
}

// A deferral of a postponed domain waits for the pause's end; once the destination is up
// again, its own backoff applies.
TEST_F(DestinationStateTest, ApplyDefersNoEarlierThanThePauseUntilUp) {
  enqueue(2, "a.test");
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store);
  auto owner = store->register_run(unix_now_ms());
  ASSERT_TRUE(owner);
  const int64_t now = unix_now_ms();
  const int64_t until = now + 600'000;
  ASSERT_TRUE(store->connection().begin());
  auto rows = store->claim(*owner, 10, now, now + 3'600'000);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  const smtp::Reply why{0, {4, 4, 1}, "connect to relay: Connection refused"};
  ASSERT_TRUE(store->record_destination("relay", true, until, why, now));
  ASSERT_TRUE(store->postpone_domain("relay", "a.test", until));
  RecipientUpdate u{(*rows)[0].id, smtp::RecipientStatus::kDeferred, why, true};
  EXPECT_EQ(*store->apply(*owner, u, schedule_, now),
            RecipientState::kDeferred);
  ASSERT_TRUE(store->record_destination("relay", false, 0, {}, now));
  u.recipient_id = (*rows)[1].id;
  EXPECT_EQ(*store->apply(*owner, u, schedule_, now), RecipientState::kDeferred);
  ASSERT_TRUE(store->connection().commit());
  EXPECT_EQ(query("SELECT next_attempt_at FROM recipients WHERE id = " + std::to_string((*rows)[0].id)),
            until);
  EXPECT_EQ(query("SELECT next_attempt_at FROM recipients WHERE id = " + std::to_string((*rows)[1].id)),
            now + 1000);
  EXPECT_EQ(query("SELECT attempts FROM recipients WHERE id = " + std::to_string((*rows)[1].id)), 1);
  EXPECT_EQ(query("SELECT count(*) FROM destinations WHERE name = 'relay' AND state = 'up' "
                  "AND failures = 0 AND paused_until IS NULL"),
            1);
}

// The thread records the pause, postpones the paused domain's queued recipients (no
// attempt counted) before the claims of the same commit, and floors the deferrals that
// follow; "up" marks the row up and creates none for a destination never paused.
TEST_F(DestinationStateTest, StorageThreadAppliesPauseAndUp) {
  enqueue(3, "b.test");  // due first, so the first claim takes them
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  enqueue(5, "a.test");
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store);
  auto owner = store->register_run(unix_now_ms());
  ASSERT_TRUE(owner);
  const auto until = std::chrono::system_clock::now() + std::chrono::minutes(10);
  const int64_t until_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(until.time_since_epoch()).count();
  {
    StorageThread thread(std::move(*store), *owner, options_, schedule_);
    // b.test's recipients are claimed (in flight) before the pause.
    auto first = thread.claim(3).get();
    ASSERT_TRUE(first);
    ASSERT_EQ(first->size(), 3u);

    engine::DestinationStateChange down;
    down.name = "relay.test";
    down.domains = {"a.test", "b.test"};
    down.paused = true;
    down.paused_until = until;
    down.reason = smtp::Reply{421, {4, 3, 2}, "too busy"};
    thread.on_destination_state(0, down);
    down.domains = {"a.test"};  // a second report of the same pause counts once
    thread.on_destination_state(0, down);
    auto rest = thread.claim(100).get();  // same commit or a later one: after the change
    ASSERT_TRUE(rest);
    EXPECT_TRUE(rest->empty()) << rest->size() << " claimed from a paused domain";

    // The in-flight b.test recipients are deferred: their next attempt is the pause's end.
    smtp::TransactionOutcome outcome;
    outcome.not_attempted = true;
    for (const ClaimedItem& item : *first) {
      outcome.transaction.recipients.push_back(item.address);
      outcome.transaction.recipient_tags.push_back(static_cast<uint64_t>(item.recipient_id));
      outcome.recipients.push_back({smtp::RecipientStatus::kDeferred, down.reason});
    }
    thread.on_transaction_finished(0, outcome);

    engine::DestinationStateChange up;
    up.name = "never-paused.test";
    thread.on_destination_state(0, up);
    ASSERT_TRUE(thread.flush());
    EXPECT_FALSE(thread.failure());
  }
  EXPECT_EQ(query("SELECT count(*) FROM destinations"), 1);
  EXPECT_EQ(query("SELECT paused_until FROM destinations WHERE name = 'relay.test' AND state = "
                  "'paused' AND failures = 1 AND last_code = 421 AND last_enhanced = '4.3.2'"),
            until_ms);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE domain = 'a.test' AND state = 'queued' "
                  "AND attempts = 0 AND next_attempt_at = " + std::to_string(until_ms)),
            5);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE domain = 'b.test' AND state = 'deferred' "
                  "AND attempts = 1 AND next_attempt_at >= " + std::to_string(until_ms)),
            3);

  auto again = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(again);
  auto report = again->status(std::nullopt);
  ASSERT_TRUE(report);
  ASSERT_EQ(report->paused_destinations.size(), 1u);
  EXPECT_EQ(report->paused_destinations[0].name, "relay.test");
  EXPECT_EQ(report->paused_destinations[0].paused_until_ms, until_ms);
  EXPECT_EQ(report->paused_destinations[0].last_text, "too busy");
  // A pause whose end has passed is not listed, though the row still says paused.
  ASSERT_TRUE(again->connection().exec(
      "UPDATE destinations SET paused_until = paused_until - 3600000"));
  auto later = again->paused_destinations();
  ASSERT_TRUE(later);
  EXPECT_TRUE(later->empty());
  ASSERT_TRUE(again->connection().exec(
      "UPDATE destinations SET paused_until = paused_until + 3600000"));

  auto owner2 = again->register_run(unix_now_ms());
  ASSERT_TRUE(owner2);
  {
    StorageThread thread(std::move(*again), *owner2, options_, schedule_);
    engine::DestinationStateChange up;
    up.name = "relay.test";
    thread.on_destination_state(0, up);
    ASSERT_TRUE(thread.flush());
  }
  EXPECT_EQ(query("SELECT count(*) FROM destinations WHERE name = 'relay.test' AND state = 'up'"), 1);
}

}  // namespace
}  // namespace ringmail::storage

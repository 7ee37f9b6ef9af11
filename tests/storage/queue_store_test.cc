#include "storage/queue_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "storage/schema.h"
#include "tests/storage/other_connection.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

constexpr int64_t kNow = 1'750'000'000'000;

class QueueStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = db_.path();
    auto s = QueueStore::open(options_, OpenMode::kReadWriteCreate);
    ASSERT_TRUE(s) << s.error().message;
    store_.emplace(std::move(*s));
  }

  // Enqueues `n` recipients user<i>@<domain>; returns the counts.
  EnqueueCounts enqueue(size_t n, std::optional<std::string> key = std::nullopt,
                        std::string campaign = "c1", int64_t due = kNow,
                        std::string domain = "example.test") {
    EnqueueRequest r{campaign, "s@example.test", "Subject: x\r\n\r\nhi\r\n", due, key};
    auto counts = store_->begin_enqueue(r, kNow);
    EXPECT_TRUE(counts) << counts.error().message;
    if (!counts->duplicate) {
      for (size_t i = 0; i < n; ++i) {
        std::string a = "user" + std::to_string(i) + "@" + domain;
        auto ok = store_->add_recipient(*counts, a, domain, due, kNow);
        EXPECT_TRUE(ok) << ok.error().message;
      }
      auto done = store_->finish_enqueue();
      EXPECT_TRUE(done) << done.error().message;
    } else {
      store_->abort_enqueue();
    }
    return *counts;
  }

  // One urgent message (enqueue --urgent) to `addresses`, due at `due`.
  void enqueue_urgent(std::initializer_list<const char*> addresses, int64_t due = kNow) {
    EnqueueRequest r{"receipts", "s@example.test", "Subject: r\r\n\r\nhi\r\n", due,
                     std::nullopt, /*urgent=*/true};
    auto counts = store_->begin_enqueue(r, kNow);
    ASSERT_TRUE(counts);
    for (const char* a : addresses)
      ASSERT_TRUE(store_->add_recipient(*counts, a, "shop.test", due, kNow));
    ASSERT_TRUE(store_->finish_enqueue());
  }

  std::map<RecipientState, uint64_t> states() {
    std::map<RecipientState, uint64_t> out;
    auto counts = store_->state_counts();
    EXPECT_TRUE(counts);
    for (auto& [s, n] : *counts) out[s] = n;
    return out;
  }

  int64_t query(const std::string& sql) {
    auto v = store_->connection().query_int(sql);
    EXPECT_TRUE(v) << v.error().message;
    return v->value_or(-1);
  }

  std::vector<ClaimedRecipient> claim(int64_t owner, size_t n, int64_t now = kNow) {
    EXPECT_TRUE(store_->connection().begin());
    auto rows = store_->claim(owner, n, now, now + 3'600'000);
    EXPECT_TRUE(rows) << rows.error().message;
    EXPECT_TRUE(store_->connection().commit());
    return *rows;
  }

  RecipientState apply(int64_t owner, int64_t id, smtp::RecipientStatus status, int code,
                       smtp::EnhancedCode enhanced, int64_t now = kNow,
                       bool not_attempted = false) {
    RecipientUpdate u;
    u.recipient_id = id;
    u.status = status;
    u.reply.code = code;
    u.reply.enhanced = enhanced;
    u.reply.text = "reply text";
    u.not_attempted = not_attempted;
    u.about_recipient = true;  // each reply as if it answered the recipient's RCPT
    EXPECT_TRUE(store_->connection().begin());
    auto s = store_->apply(owner, u, schedule_, now);
    EXPECT_TRUE(s) << s.error().message;
    EXPECT_TRUE(store_->connection().commit());
    return *s;
  }

  testing::TempDb db_;
  StorageOptions options_;
  RetrySchedule schedule_;
  std::optional<QueueStore> store_;
};

TEST_F(QueueStoreTest, SchemaIsCreatedInWalModeAndMigrationIsIdempotent) {
  auto v = schema_version(store_->connection());
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, current_schema_version());
  {
    auto mode = store_->connection().prepare("PRAGMA journal_mode");
    ASSERT_TRUE(mode);
    ASSERT_TRUE(*mode->step());
    EXPECT_EQ(mode->column_text(0), "wal");
  }
  EXPECT_TRUE(migrate(store_->connection()));
  EXPECT_EQ(query("SELECT count(*) FROM schema_version"), 1);
  // Reopening keeps the data and the version.
  enqueue(3);
  store_.reset();
  auto again = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(again) << again.error().message;
  store_.emplace(std::move(*again));
  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 3);
}

// A version 1 database (with the indexes on `state` that version 2 drops) is migrated.
TEST_F(QueueStoreTest, AVersion1DatabaseIsMigrated) {
  enqueue(3);
  ASSERT_TRUE(store_->connection().exec(
      std::string(testing::kUndoVersion5) +
      "DROP INDEX recipients_by_message;"
      "CREATE INDEX recipients_leased ON recipients(lease_owner) WHERE state = 'in_flight';"
      "CREATE INDEX recipients_by_message ON recipients(message_id, state);"
      "DROP TABLE destinations;"          // version 3's
      "DROP INDEX recipients_by_domain;"  // version 3's
      "DROP TABLE urgent_due;"            // version 4's
      "UPDATE schema_version SET version = 1"));
  store_.reset();
  auto again = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(again) << again.error().message;
  store_.emplace(std::move(*again));
  EXPECT_EQ(query("SELECT version FROM schema_version"), current_schema_version());
  EXPECT_EQ(query("SELECT count(*) FROM sqlite_master WHERE name = 'recipients_leased'"), 0);
  EXPECT_EQ(query("SELECT count(*) FROM pragma_index_info('recipients_by_message')"), 1);
  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 3);
}

// A receipt enqueued behind a campaign (--urgent) is claimed first, though the campaign
// was due earlier; the campaign follows in due order, and nothing is claimed twice.
TEST_F(QueueStoreTest, UrgentRecipientsAreClaimedBeforeBulkOnesDueEarlier) {
  enqueue(5, std::nullopt, "campaign", kNow - 60'000);
  enqueue_urgent({"order1@shop.test", "order2@shop.test"});
  EXPECT_EQ(query("SELECT count(*) FROM urgent_due"), 2);

  auto first = claim(1, 3);
  ASSERT_EQ(first.size(), 3u);
  EXPECT_EQ(first[0].address, "order1@shop.test");
  EXPECT_TRUE(first[0].urgent);
  EXPECT_EQ(first[1].address, "order2@shop.test");
  EXPECT_EQ(first[2].address, "user0@example.test");  // then the campaign, in due order
  EXPECT_FALSE(first[2].urgent);
  auto rest = claim(1, 10);
  ASSERT_EQ(rest.size(), 4u);
  for (const auto& c : rest) EXPECT_FALSE(c.urgent) << c.address;
  EXPECT_EQ(states()[RecipientState::kInFlight], 7u);
  EXPECT_EQ(query("SELECT count(*) FROM urgent_due"), 0);  // urgency is for the first try

  // An urgent message scheduled for later (--send-at) waits for its time like any other.
  enqueue_urgent({"later@shop.test"}, kNow + 60'000);
  EXPECT_TRUE(claim(1, 10).empty());
  auto due = claim(1, 10, kNow + 60'000);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_TRUE(due[0].urgent);
}

// Given back unsent (a drain's release), an urgent recipient is listed again and is the
// first claimed once more; one no longer waiting is not listed.
TEST_F(QueueStoreTest, AnUrgentRecipientGivenBackUnsentStaysUrgent) {
  enqueue(3, std::nullopt, "campaign", kNow - 60'000);
  enqueue_urgent({"order@shop.test"});
  auto first = claim(1, 1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(first[0].urgent);
  ASSERT_TRUE(store_->connection().begin());
  ASSERT_TRUE(store_->release(1, first[0].id, kNow));
  ASSERT_TRUE(store_->relist_urgent({first[0].id}));
  ASSERT_TRUE(store_->connection().commit());
  EXPECT_EQ(query("SELECT count(*) FROM urgent_due"), 1);
  auto again = claim(1, 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].address, "order@shop.test");
  EXPECT_TRUE(again[0].urgent);
  // In flight now: not listed again.
  ASSERT_TRUE(store_->connection().begin());
  ASSERT_TRUE(store_->relist_urgent({again[0].id}));
  ASSERT_TRUE(store_->connection().commit());
  EXPECT_EQ(query("SELECT count(*) FROM urgent_due"), 0);
}

TEST_F(QueueStoreTest, AVersion3DatabaseGetsTheUrgentList) {
  enqueue(3);
  ASSERT_TRUE(store_->connection().exec(std::string(testing::kUndoVersion5) +
                                        "DROP TABLE urgent_due;"
                                        "UPDATE schema_version SET version = 3"));
  store_.reset();
  auto again = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(again) << again.error().message;
  store_.emplace(std::move(*again));
  EXPECT_EQ(query("SELECT version FROM schema_version"), current_schema_version());
  EXPECT_EQ(query("SELECT count(*) FROM sqlite_master WHERE name = 'urgent_due'"), 1);
  EXPECT_EQ(claim(1, 10).size(), 3u);
}

TEST_F(QueueStoreTest, ANewerSchemaIsRefused) {
  ASSERT_TRUE(store_->connection().exec("UPDATE schema_version SET version = 99"));
  store_.reset();
  auto again = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("newer"), std::string::npos) << again.error().message;
}

TEST_F(QueueStoreTest, OpeningAMissingDatabaseWithoutCreateFails) {
  StorageOptions o;
  o.path = (db_.dir() / "missing.db").string();
  auto s = QueueStore::open(o, OpenMode::kReadWriteExisting);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("missing.db"), std::string::npos);
}

TEST_F(QueueStoreTest, TheBodyIsStoredOnceForAllRecipients) {
  EnqueueCounts c = enqueue(100);
  EXPECT_EQ(c.queued, 100u);
  EXPECT_EQ(query("SELECT count(*) FROM messages"), 1);
  EXPECT_EQ(
      query("SELECT count(*) FROM recipients WHERE message_id = " + std::to_string(c.message_id)),
      100);
  EXPECT_EQ(states()[RecipientState::kQueued], 100u);
}

TEST_F(QueueStoreTest, TheSameIdempotencyKeyEnqueuesOnce) {
  EnqueueCounts first = enqueue(10, "key-1");
  EXPECT_FALSE(first.duplicate);
  EnqueueCounts second = enqueue(10, "key-1");
  EXPECT_TRUE(second.duplicate);
  EXPECT_EQ(second.message_id, first.message_id);
  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 10);
  EnqueueCounts other = enqueue(5, "key-2");
  EXPECT_FALSE(other.duplicate);
  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 15);
  EXPECT_EQ(query("SELECT count(*) FROM campaigns"), 1);  // same campaign name
}

TEST_F(QueueStoreTest, SuppressedAddressesAreRecordedAsSuppressed) {
  ASSERT_TRUE(store_->suppress("USER3@example.test", "manual", kNow));
  EnqueueCounts c = enqueue(5);
  EXPECT_EQ(c.queued, 4u);
  EXPECT_EQ(c.suppressed, 1u);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'suppressed' AND "
                  "address = 'user3@example.test'"),
            1);
  // A claim never hands out a suppressed recipient.
  EXPECT_EQ(claim(1, 100).size(), 4u);
}

TEST_F(QueueStoreTest, AddressesSuppressedAfterEnqueueAreSuppressedAtRunStart) {
  enqueue(5);
  ASSERT_TRUE(store_->suppress("user1@example.test", "manual", kNow));
  auto n = store_->apply_suppressions(kNow);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(states()[RecipientState::kSuppressed], 1u);
  auto removed = store_->unsuppress("USER1@example.test");
  ASSERT_TRUE(removed);
  EXPECT_TRUE(*removed);
  EXPECT_TRUE(store_->suppressions()->empty());
}

// A claim of thousands of rows changes more pages than SQLite's statement journal keeps
// in memory (64 KiB); on a connection with file temp storage it spills to a temporary file,
// which fails where no directory is writable (a read-only root file system, a read-only
// working directory) and costs an open, writes and an unlink per claim. The storage
// thread's connection keeps them in memory.
TEST_F(QueueStoreTest, ADeliveryConnectionWritesNoTemporaryFile) {
  enqueue(5000);
  const std::filesystem::path temp_dir = db_.dir() / "sqlite-temp";
  std::filesystem::create_directory(temp_dir);
  const int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(watch, 0);
  ASSERT_GE(::inotify_add_watch(watch, temp_dir.c_str(), IN_CREATE), 0);
  // SQLite's first choice of a directory for temporary files, whatever the environment.
  sqlite3_temp_directory = sqlite3_mprintf("%s", temp_dir.c_str());

  store_->tune_for_delivery();
  EXPECT_EQ(claim(1, 5000).size(), 5000u);

  alignas(inotify_event) char events[4096];
  const ssize_t n = ::read(watch, events, sizeof events);
  EXPECT_LT(n, 0) << "a temporary file was created in " << temp_dir;
  ::close(watch);
  sqlite3_free(sqlite3_temp_directory);
  sqlite3_temp_directory = nullptr;
}

TEST_F(QueueStoreTest, ClaimLeasesOnlyDueRecipients) {
  enqueue(3, std::nullopt, "now");
  enqueue(2, std::nullopt, "later", kNow + 60'000, "later.test");
  auto claimed = claim(7, 100);
  EXPECT_EQ(claimed.size(), 3u);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'in_flight' AND lease_owner = 7"),
            3);
  EXPECT_TRUE(claim(7, 100).empty());                  // nothing more due now
  EXPECT_EQ(claim(7, 100, kNow + 60'000).size(), 2u);  // the scheduled campaign, when due
  auto next = store_->next_due_at();
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->has_value());
}

// A campaign scheduled in the past is due at once, and its age counts from the enqueue:
// a first 4xx defers it rather than expiring it as if it had waited since --send-at.
TEST_F(QueueStoreTest, ASendAtInThePastCountsMaxAgeFromTheEnqueue) {
  const int64_t long_ago = kNow - 30LL * 24 * 3600 * 1000;  // past the 5-day max_age
  enqueue(1, std::nullopt, "past", long_ago);
  EXPECT_EQ(query("SELECT first_due_at FROM recipients"), kNow);
  EXPECT_EQ(query("SELECT next_attempt_at FROM recipients"), long_ago);
  auto c = claim(9, 10);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(apply(9, c[0].id, smtp::RecipientStatus::kDeferred, 450, {4, 2, 0}),
            RecipientState::kDeferred);
}

// What a starting run cannot take back: leases of another run (alive, or on another host).
TEST_F(QueueStoreTest, LeasesOfOtherRunsAreCountedWithTheirFirstExpiry) {
  enqueue(3);
  ASSERT_EQ(claim(7, 10).size(), 3u);
  auto foreign = store_->leased_by_other_runs(8);
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->recipients, 3u);
  EXPECT_EQ(foreign->first_expiry_ms, kNow + 3'600'000);
  auto own = store_->leased_by_other_runs(7);
  ASSERT_TRUE(own);
  EXPECT_EQ(own->recipients, 0u);
}

// purge_final removes final recipients older than the cut-off with their attempt log,
// never a queued, deferred or in-flight one, and a message's body only when none of its
// recipients is left; its idempotency key keeps refusing a repeat.
TEST_F(QueueStoreTest, PurgeRemovesOnlyOldFinalRecipients) {
  using S = smtp::RecipientStatus;
  const int64_t old_message = enqueue(6, "old-key").message_id;
  auto c = claim(9, 6);
  ASSERT_EQ(c.size(), 6u);
  apply(9, c[0].id, S::kDelivered, 250, {2, 0, 0});
  apply(9, c[1].id, S::kBounced, 550, {5, 1, 1});  // logged, and suppressed
  apply(9, c[2].id, S::kDeferred, 450, {4, 2, 0});  // logged, stays deferred
  apply(9, c[3].id, S::kDelivered, 250, {2, 0, 0}, kNow + 10'000);  // newer than the cut-off
  const int64_t done_message = enqueue(2, "done-key", "c2", kNow, "other.test").message_id;
  auto d = claim(9, 2);
  ASSERT_EQ(d.size(), 2u);
  // c[4] stays in flight, c[5] goes back to queued.
  ASSERT_TRUE(store_->release(9, c[5].id, kNow));
  apply(9, d[0].id, S::kDelivered, 250, {2, 0, 0});
  apply(9, d[1].id, S::kDelivered, 250, {2, 0, 0});
  ASSERT_EQ(query("SELECT count(*) FROM attempts"), 2);
  // The newest recipient is never purged (SQLite would give its id again): one queued last.
  enqueue(1, "tail", "c3", kNow, "tail.test");

  auto dry = store_->purge_final(kNow + 1, std::nullopt, true, 3);
  ASSERT_TRUE(dry) << dry.error().message;
  EXPECT_EQ(dry->recipients_total(), 4u);
  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 9);  // a dry run changes nothing

  auto purged = store_->purge_final(kNow + 1, std::nullopt, false, 3);  // batches of 3 ids
  ASSERT_TRUE(purged) << purged.error().message;
  EXPECT_EQ(purged->recipients[RecipientState::kDelivered], 3u);
  EXPECT_EQ(purged->recipients[RecipientState::kBounced], 1u);
  EXPECT_EQ(purged->recipients_total(), 4u);
  EXPECT_EQ(purged->attempts, 1u);  // the bounce's; the deferral's stays with its row
  EXPECT_EQ(purged->bodies, 1u);    // the second message's: no recipient of it is left
  auto left = states();
  EXPECT_EQ(left[RecipientState::kDelivered], 1u);
  EXPECT_EQ(left[RecipientState::kDeferred], 1u);
  EXPECT_EQ(left[RecipientState::kInFlight], 1u);
  EXPECT_EQ(left[RecipientState::kQueued], 2u);
  EXPECT_EQ(left[RecipientState::kBounced], 0u);
  EXPECT_EQ(query("SELECT count(*) FROM attempts"), 1);
  EXPECT_EQ(query("SELECT length(body) FROM messages WHERE id = " + std::to_string(done_message)),
            0);
  EXPECT_GT(query("SELECT length(body) FROM messages WHERE id = " + std::to_string(old_message)),
            0);
  EXPECT_EQ(query("SELECT count(*) FROM suppressions"), 1);  // the list is not the queue's
  EXPECT_TRUE(enqueue(2, "done-key", "c2", kNow, "other.test").duplicate);

  // One campaign only; an unknown name has no id.
  auto c1 = store_->campaign_id("c1");
  ASSERT_TRUE(c1 && *c1);
  auto none = store_->campaign_id("nope");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  enqueue(1, "third", "c2", kNow, "third.test");
  auto e = claim(9, 10);  // the queued c[5], the tail and the new one
  ASSERT_EQ(e.size(), 3u);
  for (auto& r : e) apply(9, r.id, S::kDelivered, 250, {2, 0, 0});
  auto only_c1 = store_->purge_final(kNow + 20'000, *c1, false);
  ASSERT_TRUE(only_c1) << only_c1.error().message;
  EXPECT_EQ(only_c1->recipients_total(), 2u);  // c[3] and c[5]; not the c2 or c3 ones
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'delivered'"), 2);
}

// The service's retention steps: from the first id there is (a long-lived database's low
// ids are long gone), bodies at most 64 per step, and the pass ends at the first recipient
// enqueued after the cut-off.
TEST_F(QueueStoreTest, PurgeStepsSkipGoneIdsBoundTheirBodiesAndStopAtNewWork) {
  for (int i = 0; i < 100; ++i) enqueue(1, "receipt-" + std::to_string(i));  // one message each
  ASSERT_TRUE(store_->connection().exec(
      "UPDATE recipient_rows SET state = 'delivered', id = id + 1000000, updated_at = " +
      std::to_string(kNow - 10)));
  enqueue(1, "new");  // id 1,000,101, enqueued at kNow: not older than the cut-off below
  ASSERT_TRUE(store_->connection().exec("UPDATE recipient_rows SET created_at = " +
                                        std::to_string(kNow - 20) + " WHERE id <= 1000100"));
  PurgeCounts counts;
  std::set<int64_t> pending;
  auto next = store_->purge_final_step(kNow - 5, 0, 5000, counts, pending);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(*next, std::optional<int64_t>(1000101));  // one step past the empty ids
  EXPECT_EQ(counts.recipients_total(), 100u);
  EXPECT_EQ(pending.size(), 100u);
  EXPECT_EQ(counts.bodies, 0u);
  next = store_->purge_final_step(kNow - 5, *next.value(), 5000, counts, pending);
  ASSERT_TRUE(next);
  EXPECT_EQ(counts.bodies, 64u);  // one transaction's worth
  EXPECT_EQ(pending.size(), 36u);
  next = store_->purge_final_step(kNow - 5, *next.value(), 5000, counts, pending);
  ASSERT_TRUE(next);
  EXPECT_EQ(counts.bodies, 100u);
  EXPECT_TRUE(pending.empty());
  next = store_->purge_final_step(kNow - 5, *next.value(), 5000, counts, pending);
  ASSERT_TRUE(next);
  EXPECT_FALSE(*next);  // the next recipient was enqueued after the cut-off: done
  EXPECT_EQ(query("SELECT count(*) FROM recipients"), 1);
  EXPECT_EQ(query("SELECT count(*) FROM messages WHERE length(body) > 0"), 1);
}

// A purge that would empty the table's end keeps its newest recipient, so the next
// enqueue does not get an id an earlier recipient had (outcome log lines would repeat).
TEST_F(QueueStoreTest, PurgeKeepsTheNewestRecipientSoIdsAreNeverGivenAgain) {
  enqueue(3);
  auto c = claim(9, 3);
  for (auto& r : c) apply(9, r.id, smtp::RecipientStatus::kDelivered, 250, {2, 0, 0});
  auto purged = store_->purge_final(kNow + 1, std::nullopt, false);
  ASSERT_TRUE(purged) << purged.error().message;
  EXPECT_EQ(purged->recipients_total(), 2u);
  EXPECT_EQ(query("SELECT id FROM recipients"), 3);
  enqueue(1, "next");
  EXPECT_EQ(query("SELECT max(id) FROM recipients"), 4);
}

TEST_F(QueueStoreTest, OutcomesFollowThePolicy) {
  enqueue(4);
  auto c = claim(9, 4);
  ASSERT_EQ(c.size(), 4u);
  using S = smtp::RecipientStatus;
  EXPECT_EQ(apply(9, c[0].id, S::kDelivered, 250, {2, 0, 0}), RecipientState::kDelivered);
  EXPECT_EQ(apply(9, c[1].id, S::kDeferred, 450, {4, 2, 0}), RecipientState::kDeferred);
  EXPECT_EQ(apply(9, c[2].id, S::kBounced, 550, {5, 1, 1}), RecipientState::kBounced);
  EXPECT_EQ(apply(9, c[3].id, S::kDeferred, 0, {4, 3, 2}, kNow, true), RecipientState::kQueued);
  EXPECT_EQ(query("SELECT attempts FROM recipients WHERE id = " + std::to_string(c[0].id)), 1);
  EXPECT_EQ(query("SELECT attempts FROM recipients WHERE id = " + std::to_string(c[3].id)), 0);
  EXPECT_EQ(query("SELECT last_code FROM recipients WHERE id = " + std::to_string(c[1].id)), 450);
  // The deferral waits at least 60 s minus jitter.
  EXPECT_GE(query("SELECT next_attempt_at FROM recipients WHERE id = " + std::to_string(c[1].id)),
            kNow + 48'000);
  // Logged: the deferral and the bounce. Not logged: the not-attempted one, and the
  // first-try delivery (its recipient row says it all).
  EXPECT_EQ(query("SELECT count(*) FROM attempts"), 2);
  auto list = store_->suppressions();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].address, c[2].address);
  // An outcome for a lease this owner does not hold changes nothing.
  EXPECT_EQ(apply(1234, c[1].id, S::kDelivered, 250, {2, 0, 0}), RecipientState::kDelivered);
  EXPECT_EQ(states()[RecipientState::kDelivered], 1u);
}

// Delivered recipients of one transaction are applied by id ranges: gaps in the ids, a
// lease this run lost, a redelivery of an ordinary row and first deliveries of pending
// rows (a deliveries range each, no row written) are each handled as one by one.
TEST_F(QueueStoreTest, DeliveredGroupsAreAppliedByIdRanges) {
  enqueue(10);
  auto c = claim(4, 5);  // two leases: ids[0..4] and ids[5..9]
  auto c2 = claim(4, 5);
  ASSERT_EQ(c.size(), 5u);
  ASSERT_EQ(c2.size(), 5u);
  c.insert(c.end(), c2.begin(), c2.end());
  std::vector<int64_t> ids;
  for (auto& r : c) ids.push_back(r.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(query("SELECT count(*) FROM leases"), 2);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending'"), 10);
  // ids[3] defers first (one attempt: its row is written), then is claimed and delivered
  // again below, as an ordinary row.
  apply(4, ids[3], smtp::RecipientStatus::kDeferred, 451, {4, 3, 0});
  ASSERT_TRUE(store_->connection().exec(
      "UPDATE recipient_rows SET next_attempt_at = 0 WHERE id = " + std::to_string(ids[3])));
  ASSERT_EQ(claim(4, 10).size(), 1u);
  // The second lease went to another run (it expired, say).
  ASSERT_TRUE(store_->connection().exec("UPDATE leases SET owner = 99 WHERE lo = " +
                                        std::to_string(ids[5])));
  store_->forget_lease_checks();
  // ids[2] is not in this transaction.
  std::vector<int64_t> group = {ids[0], ids[1], ids[3], ids[4], ids[5],
                                ids[6], ids[7], ids[8], ids[9]};
  smtp::Reply ok{250, {2, 0, 0}, "queued as X"};
  ASSERT_TRUE(store_->connection().begin());
  auto applied = store_->apply_delivered(4, group, ok, kNow + 5);
  ASSERT_TRUE(applied) << applied.error().message;
  ASSERT_TRUE(store_->connection().commit());
  EXPECT_EQ(*applied, 4u);
  auto s = states();
  EXPECT_EQ(s[RecipientState::kDelivered], 4u);
  EXPECT_EQ(s[RecipientState::kInFlight], 6u);  // ids[5..9] (not ours), ids[2] (no outcome yet)
  EXPECT_EQ(query("SELECT lease_owner FROM recipients WHERE id = " + std::to_string(ids[5])), 99);
  EXPECT_EQ(query("SELECT attempts FROM recipients WHERE id = " + std::to_string(ids[3])), 2);
  EXPECT_EQ(query("SELECT attempts FROM recipients WHERE id = " + std::to_string(ids[0])), 1);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'delivered' AND last_code = 250 "
                  "AND last_enhanced = '2.0.0' AND last_text = 'queued as X' AND lease_owner IS "
                  "NULL AND updated_at = " +
                  std::to_string(kNow + 5)),
            4);
  // Pending rows delivered in two runs of ids (ids[2] and ids[3] are not among them).
  EXPECT_EQ(query("SELECT count(*) FROM deliveries"), 2);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending'"), 9);
  // The attempt log: the deferral and the redelivery of ids[3]; no first-try delivery.
  EXPECT_EQ(query("SELECT count(*) FROM attempts"), 2);
  EXPECT_EQ(query("SELECT count(*) FROM attempts WHERE result = 'delivered' AND code = 250 AND "
                  "recipient_id = " +
                  std::to_string(ids[3])),
            1);
  // ids[2]'s outcome, a bounce, writes its row and ends this run's first lease.
  EXPECT_EQ(apply(4, ids[2], smtp::RecipientStatus::kBounced, 550, {5, 1, 1}),
            RecipientState::kBounced);
  EXPECT_EQ(query("SELECT count(*) FROM leases"), 1);
  EXPECT_EQ(query("SELECT count(*) FROM leases WHERE owner = 99"), 1);
}

TEST_F(QueueStoreTest, StatusCountsPerCampaignAndDomain) {
  enqueue(3, std::nullopt, "alpha", kNow, "a.test");
  enqueue(2, std::nullopt, "beta", kNow, "b.test");
  auto c = claim(5, 1);
  apply(5, c[0].id, smtp::RecipientStatus::kDeferred, 451, {4, 3, 0});
  auto report = store_->status(std::nullopt);
  ASSERT_TRUE(report) << report.error().message;
  std::map<std::pair<std::string, RecipientState>, uint64_t> by;
  for (auto& r : report->by_campaign) by[{r.group, r.state}] = r.count;
  EXPECT_EQ((by[{"alpha", RecipientState::kQueued}] + by[{"beta", RecipientState::kQueued}]), 4u);
  ASSERT_TRUE(report->oldest_deferred);
  EXPECT_EQ(report->oldest_deferred->last_code, 451);
  ASSERT_EQ(report->top_replies.size(), 1u);
  EXPECT_EQ(report->top_replies[0].enhanced, "4.3.0");
  auto beta = store_->status(std::string("beta"));
  ASSERT_TRUE(beta);
  for (auto& r : beta->by_campaign) EXPECT_EQ(r.group, "beta");
  for (auto& r : beta->by_domain) EXPECT_EQ(r.group, "b.test");
}

// A run that died (its pid is gone) leaves leases behind; the next run takes them back.
TEST_F(QueueStoreTest, LeasesOfADeadRunGoBackToQueuedWithAttemptsUnchanged) {
  enqueue(10);
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // a pid that no longer runs
  auto owner = store_->register_run(kNow);
  ASSERT_TRUE(owner);
  ASSERT_TRUE(store_->connection().exec("UPDATE runs SET pid = " + std::to_string(child)));
  auto c = claim(*owner, 4);
  ASSERT_EQ(c.size(), 4u);
  apply(*owner, c[0].id, smtp::RecipientStatus::kDeferred, 450, {4, 0, 0});
  ASSERT_TRUE(store_->connection().exec("UPDATE recipient_rows SET next_attempt_at = 0"));
  c = claim(*owner, 4);  // c[0] again (one attempt behind it) and three more
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(states()[RecipientState::kInFlight], 7u);

  // A live run's leases are left alone.
  auto live = store_->register_run(kNow);
  ASSERT_TRUE(live);
  auto mine = claim(*live, 10);
  EXPECT_EQ(mine.size(), 3u);

  auto recovered = store_->recover_leases(kNow);
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(*recovered, 7u);
  EXPECT_EQ(states()[RecipientState::kQueued], 7u);
  EXPECT_EQ(states()[RecipientState::kInFlight], 3u);
  EXPECT_EQ(query("SELECT sum(attempts) FROM recipients"), 1);
  EXPECT_EQ(query("SELECT count(*) FROM runs"), 1);  // the dead run is forgotten
}

TEST_F(QueueStoreTest, ExpiredLeasesAreTakenBackUnlessTheirRunLivesOnThisHost) {
  enqueue(2);
  auto owner = store_->register_run(kNow);
  ASSERT_TRUE(owner);
  ASSERT_TRUE(store_->connection().begin());
  ASSERT_TRUE(store_->claim(*owner, 2, kNow, kNow + 1000));
  ASSERT_TRUE(store_->connection().commit());
  // The run is this test's own process, alive: it still holds the work, so even an
  // expired lease stays its own (queued again, it would be sent twice).
  auto alive = store_->recover_leases(kNow + 1001);
  ASSERT_TRUE(alive);
  EXPECT_EQ(*alive, 0u);
  // A run on another host cannot be checked: its lease's expiry is all there is.
  ASSERT_TRUE(store_->connection().exec("UPDATE runs SET host = 'elsewhere.test'"));
  auto early = store_->recover_leases(kNow + 999);
  ASSERT_TRUE(early);
  EXPECT_EQ(*early, 0u);
  auto late = store_->recover_leases(kNow + 1001);
  ASSERT_TRUE(late);
  EXPECT_EQ(*late, 2u);
}

TEST(WalAutocheckpoint, ShortOfSpaceARunKeepsSqlitesSmallWal) {
  EXPECT_EQ(wal_autocheckpoint_pages(UINT64_MAX), 10000);
  EXPECT_EQ(wal_autocheckpoint_pages(uint64_t{1} << 30), 10000);
  EXPECT_EQ(wal_autocheckpoint_pages(27u << 20), 1000);  // 27 MB free after a disk-full stop
  EXPECT_EQ(wal_autocheckpoint_pages(0), 1000);
}

TEST_F(QueueStoreTest, TheServicesCheckTakesBackOnlyDeadRunsLeases) {
  enqueue(6);
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // a pid that no longer runs
  auto gone = store_->register_run(kNow);
  auto live = store_->register_run(kNow);
  auto remote = store_->register_run(kNow);
  ASSERT_TRUE(gone && live && remote);
  ASSERT_TRUE(store_->connection().exec("UPDATE runs SET pid = " + std::to_string(child) +
                                        " WHERE owner = " + std::to_string(*gone)));
  ASSERT_TRUE(store_->connection().exec("UPDATE runs SET host = 'elsewhere.test' WHERE owner = " +
                                        std::to_string(*remote)));
  for (int64_t owner : {*gone, *live, *remote}) {
    ASSERT_TRUE(store_->connection().begin());
    ASSERT_TRUE(store_->claim(owner, 2, kNow, kNow + 1000));  // expired below
    ASSERT_TRUE(store_->connection().commit());
  }
  auto recovered = store_->recover_leases(kNow + 5000, /*only_dead_runs=*/true);
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(*recovered, 2u);
  EXPECT_EQ(states()[RecipientState::kInFlight], 4u);
  EXPECT_EQ(query("SELECT count(*) FROM runs"), 2);
  // Nothing dead left: no write at all.
  auto again = store_->recover_leases(kNow + 5000, /*only_dead_runs=*/true);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
}

TEST_F(QueueStoreTest, ReleasedRecipientsAreQueuedAgain) {
  enqueue(2);
  auto c = claim(3, 2);
  ASSERT_TRUE(store_->connection().begin());
  ASSERT_TRUE(store_->release(3, c[0].id, kNow));
  ASSERT_TRUE(store_->connection().commit());
  EXPECT_EQ(states()[RecipientState::kQueued], 1u);
  EXPECT_EQ(query("SELECT sum(attempts) FROM recipients"), 0);
}

// The claim's statements as queue_store.cc and queue_pending.cc write them (the index
// named or refused: with recipients_by_state, version 5, the planner would otherwise read
// every due row by state and sort them), and the view's lookups of a row's ranges.
TEST_F(QueueStoreTest, TheClaimUsesTheDueIndex) {
  auto plan_of = [&](const std::string& sql) {
    auto p = store_->connection().prepare("EXPLAIN QUERY PLAN " + sql);
    EXPECT_TRUE(p) << sql;
    std::string t;
    while (p && *p->step()) t += std::string(p->column_text(3)) + "\n";
    return t;
  };
  std::string due = plan_of(
      "SELECT id FROM recipient_rows INDEXED BY recipients_due WHERE state IN ('queued', "
      "'deferred') AND next_attempt_at <= 5 ORDER BY next_attempt_at LIMIT 10");
  EXPECT_NE(due.find("recipients_due"), std::string::npos) << due;
  EXPECT_EQ(due.find("TEMP B-TREE"), std::string::npos) << due;  // no sort
  // Leases, outcomes and the read of a pending range go by rowid ranges.
  for (const char* sql :
       {"UPDATE recipient_rows NOT INDEXED SET state = 'in_flight' WHERE id BETWEEN 1 AND 9 "
        "AND state IN ('queued', 'deferred')",
        "UPDATE recipient_rows NOT INDEXED SET state = 'delivered' WHERE id BETWEEN 1 AND 9 "
        "AND state = 'in_flight' AND lease_owner = 3",
        "SELECT id, message_id, address, first_due_at FROM recipient_rows NOT INDEXED "
        "WHERE id BETWEEN 1 AND 9 AND state = 'pending' LIMIT 5"}) {
    std::string t = plan_of(sql);
    EXPECT_NE(t.find("INTEGER PRIMARY KEY"), std::string::npos) << t;
  }
  // The view finds a row's delivery and lease by their first id, not by a scan.
  std::string view = plan_of("SELECT state FROM recipients WHERE id = 5");
  EXPECT_EQ(view.find("SCAN"), std::string::npos) << view;
  // The urgent list's read joins the table by id (the view there would be built whole).
  std::string urgent = plan_of(
      "SELECT u.recipient_id, r.state FROM urgent_due u LEFT JOIN recipient_rows r ON r.id = "
      "u.recipient_id WHERE u.next_attempt_at <= 5 ORDER BY u.next_attempt_at LIMIT 10");
  EXPECT_EQ(urgent.find("SCAN r"), std::string::npos) << urgent;
  EXPECT_EQ(urgent.find("MATERIALIZE"), std::string::npos) << urgent;
}

}  // namespace
}  // namespace ringmail::storage

// The storage thread and the database job source with the real engine against real
// peers on loopback: outcomes committed, retries after a soft reject, a 5.1.1 bounce
// suppressed, recipients of one message grouped into shared transactions.
#include "storage/storage_thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>

#include "engine/engine.h"
#include "smtp/message_body.h"
#include "storage/database_job_source.h"
#include "tests/storage/temp_db.h"
#include "tests/support/scripted_smtp_server.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::storage {
namespace {

engine::EngineOptions engine_options(unsigned rcpt_per_txn) {
  engine::EngineOptions o;
  o.shards = 1;
  o.helo_name = "ringmail.test";
  o.pool.max_connections = 4;
  o.pool.max_recipients_per_transaction = rcpt_per_txn;
  o.pool.idle_timeout = engine::Seconds(1);
  o.timeouts.connect = o.timeouts.greeting = o.timeouts.command = engine::Seconds(5);
  o.timeouts.data_start = o.timeouts.data_block = o.timeouts.data_end = engine::Seconds(5);
  o.drain_timeout = engine::Seconds(5);
  return o;
}

class StorageWithEngine : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = db_.path();
    schedule_.first_delay = Seconds(0);  // retries due at once, so a test need not wait
    schedule_.jitter = 0;
  }

  void enqueue(size_t n, std::string domain = "example.test") {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteCreate);
    ASSERT_TRUE(store) << store.error().message;
    EnqueueRequest r{"c", "s@ringmail.test", smtp::encode_data_body("Subject: t\r\n\r\nhello\r\n"),
                     0, std::nullopt};
    const int64_t now = unix_now_ms();
    auto counts = store->begin_enqueue(r, now);
    ASSERT_TRUE(counts);
    for (size_t i = 0; i < n; ++i) {
      std::string a = "r" + std::to_string(i) + "@" + domain;
      ASSERT_TRUE(store->add_recipient(*counts, a, domain, now, now));
    }
    ASSERT_TRUE(store->finish_enqueue());
  }

  // What `ringmail run --until-done` does: engine passes until nothing is due now.
  unsigned run_until_done(uint16_t port, unsigned rcpt_per_txn, unsigned max_passes = 20) {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    EXPECT_TRUE(store);
    EXPECT_TRUE(store->recover_leases(unix_now_ms()));
    auto owner = store->register_run(unix_now_ms());
    EXPECT_TRUE(owner);
    StorageThread storage(std::move(*store), *owner, options_, schedule_);
    engine::StaticRelayResolver resolver(engine::Destination{"127.0.0.1", port});
    unsigned passes = 0;
    while (passes < max_passes) {
      ++passes;
      DatabaseJobSource source(storage, options_.claim_batch);
      {
        engine::Engine engine(engine_options(rcpt_per_txn), resolver, &storage);
        engine.start(source);
        EXPECT_TRUE(engine.wait_for(std::chrono::seconds(30)));
      }
      source.release_unsent();
      EXPECT_TRUE(storage.flush());
      auto next = storage.next_due_at();
      EXPECT_TRUE(next);
      if (!*next || **next > unix_now_ms()) break;
    }
    return passes;
  }

  std::map<std::string, int64_t> column_by_address(const std::string& column) {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    auto st = store->connection().prepare("SELECT address, " + column + " FROM recipients");
    std::map<std::string, int64_t> out;
    while (*st->step()) out[st->column_string(0)] = st->column_int(1);
    return out;
  }

  std::map<RecipientState, uint64_t> states() {
    auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    std::map<RecipientState, uint64_t> out;
    auto counts = store->state_counts();  // named: a range-for would not extend its life
    for (auto& [s, n] : *counts) out[s] = n;
    return out;
  }

  testing::TempDb db_;
  StorageOptions options_;
  RetrySchedule schedule_;
};

TEST_F(StorageWithEngine, DeliversEveryRecipientInGroupedTransactions) {
  auto sink = test::SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  enqueue(2500);
  options_.claim_batch = 700;  // several claims, one prefetched
  EXPECT_EQ(run_until_done((*sink)->port(), 100), 1u);
  EXPECT_EQ(states()[RecipientState::kDelivered], 2500u);
  EXPECT_EQ((*sink)->recipients_received(), 2500u);
  // One body shared by all: 100 recipients a transaction (a claim boundary may split one).
  EXPECT_LE((*sink)->messages_received(), 30u);
  auto attempts = column_by_address("attempts");
  for (auto& [a, n] : attempts) ASSERT_EQ(n, 1) << a;
}

TEST_F(StorageWithEngine, OneRecipientTransactionsKeepEachTheirOwnReply) {
  // Receipts: one recipient per transaction. The storage thread merges the outcomes that
  // share a reply into one statement; a server that names each message ("queued as N")
  // must still leave each recipient its own reply, and a first-try delivery no attempt row.
  std::atomic<int> queued{0};
  test::ScriptedSmtpServerOptions o;
  o.script = [&](const test::ScriptedCommand& c) -> std::optional<test::ScriptedReply> {
    if (c.verb != ".") return std::nullopt;
    return test::ScriptedReply::line("250 2.0.0 Ok: queued as " + std::to_string(++queued));
  };
  auto server = test::ScriptedSmtpServer::start(o);
  ASSERT_TRUE(server) << server.error();
  auto sink = test::SmtpSinkProcess::start();  // "250 2.0.0 Ok" to every message
  ASSERT_TRUE(sink) << sink.error();
  enqueue(300, "named.test");
  EXPECT_EQ(run_until_done((*server)->port(), 1), 1u);
  enqueue(300, "same.test");
  EXPECT_EQ(run_until_done((*sink)->port(), 1), 1u);
  EXPECT_EQ(states()[RecipientState::kDelivered], 600u);
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store);
  auto count = [&](const std::string& sql) {
    auto v = store->connection().query_int(sql);
    EXPECT_TRUE(v) << sql;
    return v && *v ? **v : -1;
  };
  EXPECT_EQ(count("SELECT count(DISTINCT last_text) FROM recipients WHERE domain = 'named.test'"), 300);
  EXPECT_EQ(count("SELECT count(*) FROM recipients WHERE domain = 'same.test' AND last_text = 'Ok'"),
            300);
  EXPECT_EQ(count("SELECT count(*) FROM recipients WHERE attempts <> 1"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM attempts"), 0);
}

TEST_F(StorageWithEngine, SoftRejectedTwiceThenAcceptedIsDeliveredAfterThreeAttempts) {
  std::mutex mutex;
  std::map<std::string, int> rcpt_seen;
  test::ScriptedSmtpServerOptions o;
  o.script = [&](const test::ScriptedCommand& c) -> std::optional<test::ScriptedReply> {
    if (c.verb != "RCPT") return std::nullopt;
    std::lock_guard lock(mutex);
    if (c.argument.find("r1@") == std::string::npos) return std::nullopt;
    if (++rcpt_seen[c.argument] <= 2) return test::ScriptedReply::line("450 4.2.0 try again later");
    return std::nullopt;
  };
  auto server = test::ScriptedSmtpServer::start(o);
  ASSERT_TRUE(server) << server.error();
  enqueue(5);
  unsigned passes = run_until_done((*server)->port(), 10);
  EXPECT_EQ(passes, 3u);
  EXPECT_EQ(states()[RecipientState::kDelivered], 5u);
  auto attempts = column_by_address("attempts");
  EXPECT_EQ(attempts["r1@example.test"], 3);
  EXPECT_EQ(attempts["r0@example.test"], 1);
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  auto log = store->connection().query_int(
      "SELECT count(*) FROM attempts a JOIN recipients r ON r.id = a.recipient_id WHERE "
      "r.address = 'r1@example.test' AND a.result = 'deferred' AND a.code = 450");
  EXPECT_EQ(log->value_or(0), 2);
  // The final delivery after deferrals is logged; a first-try delivery is not.
  auto all = store->connection().query_int(
      "SELECT count(*) FROM attempts a JOIN recipients r ON r.id = a.recipient_id WHERE "
      "r.address = 'r1@example.test'");
  EXPECT_EQ(all->value_or(0), 3);
  auto first_try = store->connection().query_int(
      "SELECT count(*) FROM attempts a JOIN recipients r ON r.id = a.recipient_id WHERE "
      "r.address = 'r0@example.test'");
  EXPECT_EQ(first_try->value_or(0), 0);
}

TEST_F(StorageWithEngine, BadMailboxBouncesAndIsSuppressed) {
  test::ScriptedSmtpServerOptions o;
  o.script = [&](const test::ScriptedCommand& c) -> std::optional<test::ScriptedReply> {
    if (c.verb == "RCPT" && c.argument.find("r2@") != std::string::npos)
      return test::ScriptedReply::line("550 5.1.1 no such user");
    return std::nullopt;
  };
  auto server = test::ScriptedSmtpServer::start(o);
  ASSERT_TRUE(server) << server.error();
  enqueue(4);
  run_until_done((*server)->port(), 10);
  auto s = states();
  EXPECT_EQ(s[RecipientState::kDelivered], 3u);
  EXPECT_EQ(s[RecipientState::kBounced], 1u);
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  auto list = store->suppressions();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].address, "r2@example.test");
  EXPECT_NE((*list)[0].reason.find("5.1.1"), std::string::npos) << (*list)[0].reason;
}

TEST_F(StorageWithEngine, ADeadDestinationDefersAndWaitsForItsBackoff) {
  // A port nothing listens on: every attempt is a connection failure (code 0 -> deferred).
  test::ScriptedSmtpServerOptions o;
  auto server = test::ScriptedSmtpServer::start(o);
  ASSERT_TRUE(server);
  const uint16_t port = (*server)->port();
  server->reset();
  enqueue(20);
  schedule_.first_delay = Seconds(60);
  EXPECT_EQ(run_until_done(port, 10), 1u);  // not due again for a minute: one pass only
  EXPECT_EQ(states()[RecipientState::kDeferred], 20u);
  for (auto& [a, n] : column_by_address("attempts")) EXPECT_EQ(n, 1) << a;
  for (auto& [a, code] : column_by_address("coalesce(last_code, -1)")) EXPECT_EQ(code, 0) << a;
}

TEST_F(StorageWithEngine, ARingFailureEndsThePassAndQueuesEveryRecipientAgain) {
  // The shard's io_uring fails at its first submission. Its not-attempted outcomes make
  // the rows due again at once, so a feeder that went on claiming would hand them back to
  // the same dead shard for ever (a pass that never ended with 100,000 rows): the failure
  // must drain the engine instead.
  auto sink = test::SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  constexpr size_t kRecipients = 60'000;
  enqueue(kRecipients);
  auto store = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store);
  auto owner = store->register_run(unix_now_ms());
  ASSERT_TRUE(owner);
  std::optional<std::string> failure;
  bool ended = false;
  {
    StorageThread storage(std::move(*store), *owner, options_, schedule_);
    engine::StaticRelayResolver resolver(engine::Destination{"127.0.0.1", (*sink)->port()});
    DatabaseJobSource source(storage, options_.claim_batch);
    auto o = engine_options(100);
    o.fail_ring_after_submissions = 1;
    o.shard_inbox_capacity = 64;
    {
      engine::Engine engine(o, resolver, &storage);
      engine.start(source);
      ended = engine.wait_for(std::chrono::seconds(20));
      failure = engine.failure();
    }
    source.release_unsent();
    ASSERT_TRUE(storage.flush());
  }
  EXPECT_TRUE(ended) << "the pass went on after the ring failed";
  ASSERT_TRUE(failure);
  EXPECT_NE(failure->find("io_uring failure"), std::string::npos) << *failure;
  // Nothing was sent and nothing is lost: every row is queued, no attempt counted.
  auto by_state = states();
  EXPECT_EQ(by_state[RecipientState::kQueued], kRecipients);
  EXPECT_EQ(by_state[RecipientState::kInFlight], 0u);
  EXPECT_EQ((*sink)->recipients_received(), 0u);
  auto store_after = QueueStore::open(options_, OpenMode::kReadWriteExisting);
  ASSERT_TRUE(store_after);
  auto attempted = store_after->connection().query_int("SELECT count(*) FROM recipients WHERE attempts > 0");
  ASSERT_TRUE(attempted);
  EXPECT_EQ(attempted->value_or(-1), 0);
}

}  // namespace
}  // namespace ringmail::storage

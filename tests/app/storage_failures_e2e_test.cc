// A database that another process has locked, that is not a database or is damaged, or
// that cannot be written: the real binary (enqueue, run, status) must say so clearly,
// name the file, take no new work and lose nothing that was accepted. Judged by exit
// status, stderr, the database's counts before and after, and what a real smtp-sink got
// once the cause is gone. A lock is held by this process (another process to ringmail).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "tests/app/queue_database.h"
#include "tests/app/ringmail_binary.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uid_t kNobody = 65534;

using Result = RingmailResult;

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

// Another process's write transaction (BEGIN IMMEDIATE) on the database, held until
// release() or destruction.
class WriteLock {
 public:
  explicit WriteLock(const fs::path& db) {
    sqlite3_open_v2(db.c_str(), &h_, SQLITE_OPEN_READWRITE, nullptr);
    sqlite3_busy_timeout(h_, 5000);  // ringmail's own commits are short
    held_ = sqlite3_exec(h_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  ~WriteLock() { release(); }
  bool held() const { return held_; }
  void release() {
    if (h_ == nullptr) return;
    if (held_) sqlite3_exec(h_, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(h_);
    h_ = nullptr;
    held_ = false;
  }

 private:
  sqlite3* h_ = nullptr;
  bool held_ = false;
};

class StorageFailures : public RingmailBinaryTest {
 protected:
  void SetUp() override {
    RingmailBinaryTest::SetUp();
    // Readable by all: the read-only tests may run the binary as another user.
    fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
    std::ofstream(dir_ / "m.eml") << "From: a@ringmail.test\nSubject: failures\n\nhello\n";
    db_ = dir_ / "q.db";
  }

  Result run(std::vector<std::string> args, std::optional<uid_t> as_user = {}) {
    return RingmailBinaryTest::run(std::move(args), {.as_user = as_user});
  }
  std::vector<std::string> enqueue_args(const fs::path& rcpts) {
    return {"enqueue", "--db", db_.string(), "--from", "a@ringmail.test", "--message",
            (dir_ / "m.eml").string(), "--recipients", rcpts.string(), "--quiet"};
  }
  std::vector<std::string> run_args(const std::string& relay) {
    return {"run", "--db", db_.string(), "--relay", relay, "--until-done", "--shards", "1",
            "--quiet", "--summary", "json"};
  }
  std::vector<std::string> status_args() { return {"status", "--db", db_.string(), "--json"}; }

  int64_t count(const std::string& state = "") {
    return sql_int(db_, "SELECT count(*) FROM recipients" +
                            (state.empty() ? "" : " WHERE state = '" + state + "'"));
  }

  // The next run delivers every recipient and the sink gets each of them.
  void expect_all_delivered_by_a_new_run(int64_t total) {
    auto sink = SmtpSinkProcess::start();
    ASSERT_TRUE(sink) << sink.error();
    Result done = run(run_args((*sink)->address()));
    ASSERT_EQ(done.exit_code, 0) << done.err;
    EXPECT_EQ(count("delivered"), total);
    EXPECT_GE((*sink)->recipients_received(), static_cast<uint64_t>(total));
  }

  fs::path db_;
};

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "missing \"" << part << "\" in: " << text;
}

// The words every message about a held lock must have: the file, SQLite's words, the cause.
void expect_locked_message(const std::string& err, const fs::path& db) {
  expect_contains(err, db.string());
  expect_contains(err, "database is locked");
  expect_contains(err, "another process holds the database's write lock");
}

// ------------------------------------------------------------------------------ locked

TEST_F(StorageFailures, ALockHeldPastTheBusyTimeoutRefusesAnEnqueueButNotStatus) {
  ASSERT_EQ(run(enqueue_args(recipients(50))).exit_code, 0);
  WriteLock lock(db_);
  ASSERT_TRUE(lock.held());
  // status only reads: a writer does not hold it up.
  Result status = run(status_args());
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(nlohmann::json::parse(status.out)["campaigns"]["default"]["queued"], 50);

  Result refused = run(enqueue_args(recipients(30, "more.txt", 50)));  // waits ~10 s
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  expect_locked_message(refused.err, db_);
  lock.release();
  EXPECT_EQ(count(), 50);
  expect_all_delivered_by_a_new_run(50);
}

TEST_F(StorageFailures, ALockHeldPastTheBusyTimeoutStopsARunBeforeItSends) {
  ASSERT_EQ(run(enqueue_args(recipients(50))).exit_code, 0);
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  {
    WriteLock lock(db_);
    ASSERT_TRUE(lock.held());
    Result refused = run(run_args((*sink)->address()));  // waits ~10 s
    EXPECT_EQ(refused.exit_code, 2) << refused.err;
    expect_locked_message(refused.err, db_);
  }
  EXPECT_EQ((*sink)->messages_received(), 0u);
  EXPECT_EQ(count("queued"), 50);
  expect_all_delivered_by_a_new_run(50);
}

TEST_F(StorageFailures, AShortLockIsWaitedOut) {
  ASSERT_EQ(run(enqueue_args(recipients(50))).exit_code, 0);
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  for (bool enqueue : {true, false}) {
    auto lock = std::make_unique<WriteLock>(db_);
    ASSERT_TRUE(lock->held());
    RingmailProcess child(enqueue ? enqueue_args(recipients(30, "more.txt", 50))
                                  : run_args((*sink)->address()),
                          dir_);
    std::this_thread::sleep_for(1500ms);
    lock.reset();
    Result r = child.wait();
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_EQ(count("delivered"), 80);
  EXPECT_EQ((*sink)->recipients_received(), 80u);
}

// The lock is taken while a run delivers and held past the busy timeout (as a large
// enqueue holds it), then released: the run waits it out, keeping its outcomes in memory
// and claiming nothing meanwhile, says so, and then finishes. Stopping instead would send
// again everything it had sent but not yet recorded.
TEST_F(StorageFailures, ALockHeldMidRunIsWaitedOutAndNothingIsSentTwice) {
  constexpr int64_t kTotal = 40;
  ASSERT_EQ(run(enqueue_args(recipients(kTotal))).exit_code, 0);
  SmtpSinkOptions slow;
  slow.extra_args = {"-w", "1"};  // one second per message: the run outlasts the lock
  auto sink = SmtpSinkProcess::start(slow);
  ASSERT_TRUE(sink) << sink.error();
  auto args = run_args((*sink)->address());
  // Small claims and a short inbox: the engine holds a few transactions, not the whole
  // queue, so it must come back to the database for more while the lock is held.
  args.insert(args.end(),
              {"--connections", "1", "--rcpt-per-txn", "5", "--config",
               config("[storage]\nclaim_batch = 5\n[engine]\nshard_inbox_capacity = 1\n")
                   .string()});
  RingmailProcess child(args, dir_);
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while ((*sink)->messages_received() == 0 && child.running() &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  ASSERT_GT((*sink)->messages_received(), 0u) << "the run delivered nothing";
  {
    WriteLock lock(db_);
    ASSERT_TRUE(lock.held());
    // Past the run's 10 s busy timeout, counted from its first commit after the lock was
    // taken (the next outcome, up to a second later), with a margin.
    std::this_thread::sleep_for(13s);
    EXPECT_TRUE(child.running());
  }
  Result done = child.wait();
  EXPECT_EQ(done.exit_code, 0) << done.err;
  expect_contains(done.err, "holds the database's write lock");
  EXPECT_EQ(count("delivered"), kTotal);
  std::set<std::string> seen;
  for (const SinkTransaction& t : (*sink)->transactions())
    for (const std::string& r : t.rcpt_to) seen.insert(r.substr(0, r.find('>') + 1));
  EXPECT_EQ(seen.size(), static_cast<size_t>(kTotal));
  EXPECT_EQ((*sink)->recipients_received(), static_cast<uint64_t>(kTotal));  // none twice
}

// ------------------------------------------------------------------------------ corrupt

void expect_corrupt_message(const std::string& err, const fs::path& db, const std::string& sqlite) {
  expect_contains(err, db.string());
  expect_contains(err, sqlite);
  expect_contains(err, "not a ringmail database, or it is damaged");
  expect_contains(err, "restore the database from a backup");
}

TEST_F(StorageFailures, AFileThatIsNotADatabaseIsRefusedAndLeftAsItIs) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  std::mt19937 rng(7);
  std::string noise(100 * 1024, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  std::ofstream(db_, std::ios::binary) << noise;
  for (auto args : {enqueue_args(recipients(10)), run_args((*sink)->address()), status_args()}) {
    Result r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.err;
    expect_corrupt_message(r.err, db_, "file is not a database");
  }
  EXPECT_EQ(file_bytes(db_), noise);
  EXPECT_FALSE(fs::exists(db_.string() + "-wal"));
  EXPECT_EQ((*sink)->messages_received(), 0u);
}

TEST_F(StorageFailures, ATruncatedDatabaseIsRefusedAndLeftAsItIs) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  ASSERT_EQ(run(enqueue_args(recipients(3000))).exit_code, 0);
  ASSERT_EQ(run(status_args()).exit_code, 0);  // the last close checkpoints the WAL away
  std::string bytes = file_bytes(db_);
  bytes.resize(bytes.size() / 2);
  std::ofstream(db_, std::ios::binary | std::ios::trunc) << bytes;
  for (auto args : {enqueue_args(recipients(10, "more.txt", 3000)), run_args((*sink)->address()),
                    status_args()}) {
    Result r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.err;
    expect_corrupt_message(r.err, db_, "malformed");
  }
  EXPECT_EQ(file_bytes(db_), bytes);
  EXPECT_EQ((*sink)->messages_received(), 0u);
}

// A damaged page in the middle of the recipients. SQLite finds damage where it reads:
// status reads every row and refuses; a run reads rows as it claims them (its start reads
// no row: the leases to recover are found through an index), so it delivers the rows
// before the damage and stops taking work at the damaged page, with the same message.
// Neither writes over the damage. (enqueue writes only the last pages and may not notice:
// a full check on each enqueue would cost a scan of the database.)
TEST_F(StorageFailures, ADamagedPageStopsRunAndStatusAndIsLeftAsItIs) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  ASSERT_EQ(run(enqueue_args(recipients(5000))).exit_code, 0);
  ASSERT_EQ(run(status_args()).exit_code, 0);
  std::string bytes = file_bytes(db_);
  const size_t page = 4096, pages = bytes.size() / page;
  ASSERT_GT(pages, 40u);
  std::mt19937 rng(11);
  // Eight pages from the middle: whatever the schema's page layout, some hold recipients
  // rows, which the run's claims and status both read.
  const size_t damage_at = page * (pages / 2), damage_size = 8 * page;
  for (size_t i = 0; i < damage_size; ++i) bytes[damage_at + i] = static_cast<char>(rng());
  std::ofstream(db_, std::ios::binary | std::ios::trunc) << bytes;
  Result r = run(run_args((*sink)->address()));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  expect_corrupt_message(r.err, db_, "malformed");
  EXPECT_NE(r.err.find("stopped taking work"), std::string::npos) << r.err;
  EXPECT_LT((*sink)->messages_received(), 5000u);
  r = run(status_args());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  expect_corrupt_message(r.err, db_, "malformed");
  EXPECT_EQ(file_bytes(db_).substr(damage_at, damage_size), bytes.substr(damage_at, damage_size));
}

// ------------------------------------------------------------------------------ read-only

// Root writes through permission bits, so as root the commands run as "nobody"; skipped
// where that user cannot be switched to or cannot run the binary.
class ReadOnlyStorage : public StorageFailures {
 protected:
  void SetUp() override {
    StorageFailures::SetUp();
    if (geteuid() == 0) {
      user_ = kNobody;
      Result probe = run({"--version"}, user_);
      if (probe.exit_code != 0)
        GTEST_SKIP() << "cannot run ringmail as uid " << kNobody << " (exit " << probe.exit_code
                     << ")";
    }
    ASSERT_EQ(run(enqueue_args(recipients(50))).exit_code, 0);
    more_ = recipients(10, "more.txt", 50);  // written now: the directory may become read-only
    ASSERT_EQ(run(status_args()).exit_code, 0);  // checkpointed: no -wal, no -shm left
    ASSERT_FALSE(fs::exists(db_.string() + "-wal"));
    before_ = file_bytes(db_);
  }

  void expect_refused_and_nothing_lost() {
    auto sink = SmtpSinkProcess::start();
    ASSERT_TRUE(sink) << sink.error();
    for (auto args : {enqueue_args(more_), run_args((*sink)->address())}) {
      Result r = run(args, user_);
      EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.err;
      expect_contains(r.err, db_.string());
      expect_contains(r.err, "read-only");
      expect_contains(r.err, "cannot write");
    }
    EXPECT_EQ((*sink)->messages_received(), 0u);
    EXPECT_EQ(file_bytes(db_), before_);
    // No -shm left behind: one as read-only as the file would refuse writes after the fix.
    EXPECT_FALSE(fs::exists(db_.string() + "-shm"));
  }

  std::optional<uid_t> user_;
  fs::path more_;
  std::string before_;
};

TEST_F(ReadOnlyStorage, AReadOnlyFileIsAClearErrorAndLosesNothing) {
  fs::permissions(db_, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  expect_refused_and_nothing_lost();
  fs::permissions(db_, fs::perms::owner_write, fs::perm_options::add);
  EXPECT_EQ(count("queued"), 50);
  expect_all_delivered_by_a_new_run(50);
}

TEST_F(ReadOnlyStorage, AReadOnlyDirectoryIsAClearErrorAndLosesNothing) {
  // The file itself is writable by the user; SQLite cannot create its -wal and -shm.
  if (user_) {
    ASSERT_EQ(chown(db_.c_str(), *user_, *user_), 0);
  }
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                            fs::perms::group_exec | fs::perms::others_read |
                            fs::perms::others_exec);
  expect_refused_and_nothing_lost();
  fs::permissions(dir_, fs::perms::owner_write, fs::perm_options::add);
  EXPECT_EQ(count("queued"), 50);
  expect_all_delivered_by_a_new_run(50);
}

}  // namespace
}  // namespace ringmail::test

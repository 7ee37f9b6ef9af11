// Pending rows (storage/README.md, "Pending rows and ranges"): a bulk recipient claimed
// and delivered through ranges of ids, and every other path that meets such a row. Each
// count is checked twice: through the `recipients` view and through state_counts() or
// status(), which compute the states without it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "storage/queue_store.h"
#include "tests/storage/temp_db.h"

namespace ringmail::storage {
namespace {

constexpr int64_t kNow = 1'750'000'000'000;
constexpr int64_t kLease = 3'600'000;

using S = smtp::RecipientStatus;
using Rows = std::vector<std::vector<int64_t>>;
using StateWords = std::map<std::string, int64_t>;  // state word -> recipients
using GroupCounts = std::map<std::pair<std::string, std::string>, int64_t>;  // (group, state)
using ReplyCounts = std::map<std::pair<int64_t, std::string>, int64_t>;      // (code, enhanced)

// One message to <prefix><i>@<domain>, i = 0..n-1; set as Batch().campaign("x").due(t)...
class Batch {
 public:
  Batch& campaign(std::string v) {
    campaign_ = std::move(v);
    return *this;
  }
  Batch& due(int64_t v) {
    due_ = v;
    return *this;
  }
  Batch& domain(std::string v) {
    domain_ = std::move(v);
    return *this;
  }
  Batch& prefix(std::string v) {
    prefix_ = std::move(v);
    return *this;
  }
  Batch& urgent() {
    urgent_ = true;
    return *this;
  }
  Batch& key(std::string v) {
    key_ = std::move(v);
    return *this;
  }

  std::string campaign_ = "c1";
  int64_t due_ = kNow;
  std::string domain_ = "example.test";
  std::string prefix_ = "user";
  bool urgent_ = false;
  std::optional<std::string> key_;
};

const smtp::Reply kOk{250, {2, 0, 0}, "queued as X"};

class PendingRowsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = db_.path();
    auto s = QueueStore::open(options_, OpenMode::kReadWriteCreate);
    ASSERT_TRUE(s) << s.error().message;
    store_.emplace(std::move(*s));
  }

  // A run registered through `s` whose process is gone (a pid that no longer runs), as
  // recovery sees a run killed with -9.
  std::optional<int64_t> register_dead_run(QueueStore& s) {
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, nullptr, 0);
    auto owner = s.register_run(kNow);
    EXPECT_TRUE(owner) << owner.error().message;
    if (!owner) return std::nullopt;
    exec("UPDATE runs SET pid = " + std::to_string(child) +
         " WHERE owner = " + std::to_string(*owner));
    return *owner;
  }

  // Another process's store on the same file: its own claims and lease checks.
  std::optional<QueueStore> open_other() {
    auto s = QueueStore::open(options_, OpenMode::kReadWriteExisting);
    EXPECT_TRUE(s) << s.error().message;
    if (!s) return std::nullopt;
    return std::move(*s);
  }

  QueueStore& pick(QueueStore* s) { return s ? *s : *store_; }

  EnqueueCounts enqueue(size_t n, const Batch& b = Batch(), QueueStore* s = nullptr) {
    QueueStore& q = pick(s);
    EnqueueRequest r;
    r.campaign = b.campaign_;
    r.sender = "s@example.test";
    r.encoded_body = "Subject: x\r\n\r\nhi\r\n";
    r.send_at_ms = b.due_;
    r.idempotency_key = b.key_;
    r.urgent = b.urgent_;
    auto counts = q.begin_enqueue(r, kNow);
    EXPECT_TRUE(counts) << counts.error().message;
    if (!counts) return {};
    if (!counts->duplicate) {
      for (size_t i = 0; i < n; ++i) {
        auto ok = q.add_recipient(*counts, b.prefix_ + std::to_string(i) + "@" + b.domain_,
                                  b.domain_, b.due_, kNow);
        EXPECT_TRUE(ok) << ok.error().message;
      }
    }
    auto done = q.finish_enqueue();  // for a duplicate, just the end of the transaction
    EXPECT_TRUE(done) << done.error().message;
    return *counts;
  }

  // Each of the following in a transaction of its own, started as the storage thread
  // starts one (forget_lease_checks).
  std::vector<ClaimedRecipient> claim(int64_t owner, size_t n, int64_t now = kNow,
                                      QueueStore* s = nullptr) {
    QueueStore& q = pick(s);
    EXPECT_TRUE(q.connection().begin());
    q.forget_lease_checks();
    auto rows = q.claim(owner, n, now, now + kLease);
    EXPECT_TRUE(rows) << rows.error().message;
    if (!rows) {
      q.connection().rollback();
      return {};
    }
    EXPECT_TRUE(q.connection().commit());
    return *rows;
  }

  uint64_t deliver(int64_t owner, std::vector<int64_t> ids, int64_t now = kNow + 5,
                   QueueStore* s = nullptr) {
    QueueStore& q = pick(s);
    std::sort(ids.begin(), ids.end());
    EXPECT_TRUE(q.connection().begin());
    q.forget_lease_checks();
    auto n = q.apply_delivered(owner, ids, kOk, now);
    EXPECT_TRUE(n) << n.error().message;
    EXPECT_TRUE(q.connection().commit());
    return n ? *n : 0;
  }

  RecipientState apply(int64_t owner, int64_t id, S status, int code, smtp::EnhancedCode enhanced,
                       bool not_attempted = false, int64_t now = kNow, QueueStore* s = nullptr) {
    QueueStore& q = pick(s);
    RecipientUpdate u;
    u.recipient_id = id;
    u.status = status;
    u.reply = smtp::Reply{code, enhanced, "reply text"};
    u.not_attempted = not_attempted;
    u.about_recipient = true;
    EXPECT_TRUE(q.connection().begin());
    q.forget_lease_checks();
    auto state = q.apply(owner, u, schedule_, now);
    EXPECT_TRUE(state) << state.error().message;
    EXPECT_TRUE(q.connection().commit());
    return state ? *state : RecipientState::kQueued;
  }

  void release(int64_t owner, std::vector<int64_t> ids, QueueStore* s = nullptr) {
    QueueStore& q = pick(s);
    std::sort(ids.begin(), ids.end());
    ASSERT_TRUE(q.connection().begin());
    q.forget_lease_checks();
    auto ok = q.release(owner, ids, kNow);
    EXPECT_TRUE(ok) << ok.error().message;
    EXPECT_TRUE(q.connection().commit());
  }

  // --- reading the database ---
  int64_t query(const std::string& sql) {
    auto v = store_->connection().query_int(sql);
    EXPECT_TRUE(v) << sql << ": " << v.error().message;
    return v && *v ? **v : -1;
  }

  void exec(const std::string& sql) {
    auto ok = store_->connection().exec(sql);
    ASSERT_TRUE(ok) << sql << ": " << ok.error().message;
  }

  // The first `columns` integers of each row.
  Rows int_rows(const std::string& sql, int columns) {
    Rows out;
    auto st = store_->connection().prepare(sql);
    EXPECT_TRUE(st) << sql << ": " << st.error().message;
    if (!st) return out;
    while (true) {
      auto row = st->step();
      EXPECT_TRUE(row) << sql;
      if (!row || !*row) break;
      std::vector<int64_t> values;
      for (int i = 0; i < columns; ++i) values.push_back(st->column_int(i));
      out.push_back(std::move(values));
    }
    return out;
  }

  // (text, text, count) rows.
  GroupCounts group_counts(const std::string& sql) {
    GroupCounts out;
    auto st = store_->connection().prepare(sql);
    EXPECT_TRUE(st) << sql << ": " << st.error().message;
    if (!st) return out;
    while (true) {
      auto row = st->step();
      EXPECT_TRUE(row) << sql;
      if (!row || !*row) break;
      out[{st->column_string(0), st->column_string(1)}] += st->column_int(2);
    }
    return out;
  }

  std::vector<int64_t> ids_of(int64_t message_id) {
    std::vector<int64_t> out;
    for (auto& row : int_rows("SELECT id FROM recipient_rows WHERE message_id = " +
                                  std::to_string(message_id) + " ORDER BY id",
                              1))
      out.push_back(row[0]);
    return out;
  }

  Rows unclaimed() {
    return int_rows("SELECT due_at, lo, hi, message_id FROM unclaimed ORDER BY lo", 4);
  }
  Rows leases() { return int_rows("SELECT lo, hi, owner FROM leases ORDER BY lo", 3); }
  Rows deliveries() { return int_rows("SELECT lo, hi FROM deliveries ORDER BY lo", 2); }

  // The ranges' invariants: deliveries never overlap each other, nor leases each other,
  // nor an unclaimed range a lease; no deliveries range is left without a row.
  void expect_ranges_consistent() {
    EXPECT_EQ(query("SELECT count(*) FROM deliveries a JOIN deliveries b "
                    "ON a.lo < b.lo AND b.lo <= a.hi"),
              0);
    EXPECT_EQ(query("SELECT count(*) FROM leases a JOIN leases b ON a.lo < b.lo AND b.lo <= a.hi"),
              0);
    EXPECT_EQ(query("SELECT count(*) FROM unclaimed u JOIN leases l "
                    "ON u.lo <= l.hi AND l.lo <= u.hi"),
              0);
    EXPECT_EQ(query("SELECT count(*) FROM deliveries d WHERE NOT EXISTS "
                    "(SELECT 1 FROM recipient_rows WHERE id BETWEEN d.lo AND d.hi)"),
              0);
  }

  StateWords view_states(std::optional<int64_t> message_id = std::nullopt) {
    StateWords out;
    const std::string where =
        message_id ? " WHERE message_id = " + std::to_string(*message_id) : "";
    for (auto& [key, n] :
         group_counts("SELECT state, '', count(*) FROM recipients" + where + " GROUP BY state"))
      out[key.first] = n;
    return out;
  }

  StateWords counted_states(std::optional<int64_t> message_id = std::nullopt) {
    StateWords out;
    auto counts = store_->state_counts(message_id);
    EXPECT_TRUE(counts) << counts.error().message;
    if (!counts) return out;
    for (auto& [state, n] : *counts) out[std::string(to_string(state))] = int64_t(n);
    return out;
  }

  // The view and state_counts() both say `expected`.
  void expect_states(const StateWords& expected, std::optional<int64_t> message_id = std::nullopt) {
    EXPECT_EQ(view_states(message_id), expected) << "through the view";
    EXPECT_EQ(counted_states(message_id), expected) << "state_counts()";
  }

  // status() (of every campaign, or of one) counts what the view says, by campaign, by
  // domain, and by last reply.
  void expect_status_matches_view(std::optional<std::string> campaign = std::nullopt) {
    auto report = store_->status(campaign, 1000);
    ASSERT_TRUE(report) << report.error().message;
    GroupCounts by_campaign;
    GroupCounts by_domain;
    for (auto& c : report->by_campaign)
      by_campaign[{c.group, std::string(to_string(c.state))}] += int64_t(c.count);
    for (auto& c : report->by_domain)
      by_domain[{c.group, std::string(to_string(c.state))}] += int64_t(c.count);
    const std::string from =
        " FROM recipients v JOIN messages m ON m.id = v.message_id "
        "JOIN campaigns c ON c.id = m.campaign_id WHERE " +
        (campaign ? "c.name = '" + *campaign + "'" : std::string("1"));
    EXPECT_EQ(by_campaign,
              group_counts("SELECT c.name, v.state, count(*)" + from + " GROUP BY 1, 2"))
        << "by campaign";
    EXPECT_EQ(by_domain,
              group_counts("SELECT v.domain, v.state, count(*)" + from + " GROUP BY 1, 2"))
        << "by domain";
    ReplyCounts replies;
    for (auto& r : report->top_replies) replies[{r.code, r.enhanced}] += int64_t(r.count);
    ReplyCounts view_replies;
    for (auto& [key, n] :
         group_counts("SELECT v.last_code, coalesce(v.last_enhanced, ''), count(*)" + from +
                      " AND v.last_code IS NOT NULL GROUP BY 1, 2"))
      view_replies[{std::stoll(key.first), key.second}] = n;
    EXPECT_EQ(replies, view_replies) << "top replies";
    EXPECT_TRUE(
        std::is_sorted(report->top_replies.begin(), report->top_replies.end(),
                       [](const ReplyCount& a, const ReplyCount& b) { return a.count > b.count; }));
  }

  testing::TempDb db_;
  StorageOptions options_;
  RetrySchedule schedule_;
  std::optional<QueueStore> store_;
};

// ---------------------------------------------------------------- enqueue

// A bulk recipient is a 'pending' row listed in an unclaimed range: one range per message
// and due time (a recipient due at another time starts a range of its own).
TEST_F(PendingRowsTest, BulkRowsArePendingInOneUnclaimedRangePerMessageAndDueTime) {
  const EnqueueCounts a = enqueue(4);
  EnqueueRequest r{"c2", "s@example.test", "Subject: y\r\n\r\nhi\r\n", kNow, std::nullopt};
  auto b = store_->begin_enqueue(r, kNow);
  ASSERT_TRUE(b) << b.error().message;
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(
        store_->add_recipient(*b, "early" + std::to_string(i) + "@b.test", "b.test", kNow, kNow));
  for (int i = 0; i < 2; ++i)
    ASSERT_TRUE(store_->add_recipient(*b, "late" + std::to_string(i) + "@b.test", "b.test",
                                      kNow + 60'000, kNow));
  ASSERT_TRUE(store_->finish_enqueue());
  EXPECT_EQ(a.queued, 4u);
  EXPECT_EQ(b->queued, 5u);

  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending'"), 9);
  const auto ia = ids_of(a.message_id);
  const auto ib = ids_of(b->message_id);
  ASSERT_EQ(ia.size(), 4u);
  ASSERT_EQ(ib.size(), 5u);
  EXPECT_EQ(unclaimed(), (Rows{{kNow, ia[0], ia[3], a.message_id},
                               {kNow, ib[0], ib[2], b->message_id},
                               {kNow + 60'000, ib[3], ib[4], b->message_id}}));
  EXPECT_TRUE(leases().empty());
  EXPECT_TRUE(deliveries().empty());
  // Through the view: queued, nothing of an attempt or a lease.
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'queued' AND attempts = 0 AND "
                  "last_code IS NULL AND lease_owner IS NULL AND updated_at = " +
                  std::to_string(kNow)),
            9);
  expect_states({{"queued", 9}});
  expect_states({{"queued", 4}}, a.message_id);
  expect_status_matches_view();
  expect_ranges_consistent();
}

// An urgent enqueue's recipients and a suppressed address are ordinary rows: the first
// queued (claimed through urgent_due and the due index), the second final at once.
TEST_F(PendingRowsTest, UrgentAndSuppressedRecipientsAreOrdinaryRows) {
  ASSERT_TRUE(store_->suppress("USER2@example.test", "manual", kNow));
  const EnqueueCounts bulk = enqueue(5);
  const EnqueueCounts urgent =
      enqueue(2, Batch().campaign("receipts").domain("shop.test").prefix("order").urgent());
  EXPECT_EQ(bulk.queued, 4u);
  EXPECT_EQ(bulk.suppressed, 1u);
  EXPECT_EQ(urgent.queued, 2u);
  const auto ib = ids_of(bulk.message_id);
  const auto iu = ids_of(urgent.message_id);
  ASSERT_EQ(ib.size(), 5u);
  ASSERT_EQ(iu.size(), 2u);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending'"), 4);
  EXPECT_EQ(query("SELECT id FROM recipient_rows WHERE state = 'suppressed'"), ib[2]);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'queued' AND message_id = " +
                  std::to_string(urgent.message_id)),
            2);
  EXPECT_EQ(query("SELECT count(*) FROM urgent_due"), 2);
  // The suppressed id is in no range: the bulk message's ids on either side of it are
  // two ranges; the urgent message has none.
  EXPECT_EQ(unclaimed(),
            (Rows{{kNow, ib[0], ib[1], bulk.message_id}, {kNow, ib[3], ib[4], bulk.message_id}}));
  expect_states({{"queued", 6}, {"suppressed", 1}});
  expect_states({{"queued", 2}}, urgent.message_id);
  expect_status_matches_view();

  auto c = claim(1, 10);
  ASSERT_EQ(c.size(), 6u);
  EXPECT_TRUE(c[0].urgent);
  EXPECT_TRUE(c[1].urgent);
  EXPECT_EQ(c[0].id, iu[0]);
  EXPECT_EQ(c[1].id, iu[1]);
  std::vector<int64_t> bulk_claimed;
  for (size_t i = 2; i < c.size(); ++i) {
    EXPECT_FALSE(c[i].urgent);
    bulk_claimed.push_back(c[i].id);
  }
  EXPECT_EQ(bulk_claimed, (std::vector<int64_t>{ib[0], ib[1], ib[3], ib[4]}));
  // The urgent rows' claim writes them; the bulk ones' is a lease per range.
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'in_flight' AND "
                  "lease_owner = 1"),
            2);
  EXPECT_EQ(leases(), (Rows{{ib[0], ib[1], 1}, {ib[3], ib[4], 1}}));
  EXPECT_TRUE(unclaimed().empty());
  expect_states({{"in_flight", 6}, {"suppressed", 1}});
  expect_status_matches_view();
  expect_ranges_consistent();
}

// An aborted enqueue leaves no row and no range, and the next enqueue (which SQLite gives
// the same ids and message id again) lists only its own recipients. A repeated
// idempotency key adds no range either.
TEST_F(PendingRowsTest, AnAbortedEnqueueLeavesNoRangeBehind) {
  EnqueueRequest r{"c1", "s@example.test", "Subject: x\r\n\r\nhi\r\n", kNow, std::nullopt};
  auto counts = store_->begin_enqueue(r, kNow);
  ASSERT_TRUE(counts) << counts.error().message;
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(store_->add_recipient(*counts, "gone" + std::to_string(i) + "@example.test",
                                      "example.test", kNow, kNow));
  store_->abort_enqueue();
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows"), 0);
  EXPECT_EQ(query("SELECT count(*) FROM messages"), 0);
  EXPECT_TRUE(unclaimed().empty());

  const EnqueueCounts next = enqueue(2, Batch().key("k"));
  const auto ids = ids_of(next.message_id);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(unclaimed(), (Rows{{kNow, ids[0], ids[1], next.message_id}}));
  const EnqueueCounts again = enqueue(2, Batch().key("k"));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(unclaimed(), (Rows{{kNow, ids[0], ids[1], next.message_id}}));
  expect_states({{"queued", 2}});
  EXPECT_EQ(claim(1, 10).size(), 2u);
}

// A --send-at in the future: its range is not claimed before it is due, and the next due
// time is the range's.
TEST_F(PendingRowsTest, AFutureSendAtIsNotClaimedBeforeItIsDue) {
  const int64_t at = kNow + 60'000;
  const EnqueueCounts later = enqueue(3, Batch().campaign("later").due(at));
  EXPECT_TRUE(claim(1, 10).empty());
  EXPECT_TRUE(claim(1, 10, at - 1).empty());
  EXPECT_EQ(
      unclaimed(),
      (Rows{{at, ids_of(later.message_id)[0], ids_of(later.message_id)[2], later.message_id}}));
  auto next = store_->next_due_at();
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(*next, std::optional<int64_t>(at));
  auto report = store_->status(std::nullopt);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->next_due_at, std::optional<int64_t>(at));
  auto of_campaign = store_->status(std::string("later"));
  ASSERT_TRUE(of_campaign);
  EXPECT_EQ(of_campaign->next_due_at, std::optional<int64_t>(at));
  expect_states({{"queued", 3}});

  auto due = claim(1, 10, at);
  ASSERT_EQ(due.size(), 3u);
  for (const auto& c : due) {
    EXPECT_EQ(c.message_id, later.message_id);
    EXPECT_EQ(c.attempts, 0);
    EXPECT_EQ(c.first_due_at_ms, at);
    EXPECT_FALSE(c.urgent);
  }
  next = store_->next_due_at();
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->has_value());
  EXPECT_TRUE(unclaimed().empty());
  expect_states({{"in_flight", 3}});
  EXPECT_EQ(
      query("SELECT count(*) FROM recipients WHERE lease_expires = " + std::to_string(at + kLease)),
      3);
}

// ---------------------------------------------------------------- claims

// Two runs (two processes' stores) claim disjoint runs of one range; each delivers its
// own, and an outcome for the other's id changes nothing.
TEST_F(PendingRowsTest, TwoOwnersClaimDisjointIds) {
  const EnqueueCounts m = enqueue(10);
  const auto ids = ids_of(m.message_id);
  auto other = open_other();
  ASSERT_TRUE(other);
  auto a1 = claim(1, 4);
  auto b1 = claim(2, 4, kNow, &*other);
  auto a2 = claim(1, 10);
  ASSERT_EQ(a1.size(), 4u);
  ASSERT_EQ(b1.size(), 4u);
  ASSERT_EQ(a2.size(), 2u);
  std::set<int64_t> seen;
  for (auto* part : {&a1, &b1, &a2})
    for (auto& c : *part) EXPECT_TRUE(seen.insert(c.id).second) << "claimed twice: " << c.id;
  EXPECT_EQ(seen, std::set<int64_t>(ids.begin(), ids.end()));
  EXPECT_EQ(leases(), (Rows{{ids[0], ids[3], 1}, {ids[4], ids[7], 2}, {ids[8], ids[9], 1}}));
  EXPECT_TRUE(unclaimed().empty());
  EXPECT_TRUE(claim(3, 10).empty());
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending'"), 10);
  EXPECT_EQ(group_counts("SELECT lease_owner, state, count(*) FROM recipients GROUP BY 1, 2"),
            (GroupCounts{{{"1", "in_flight"}, 6}, {{"2", "in_flight"}, 4}}));
  expect_states({{"in_flight", 10}});
  expect_ranges_consistent();

  EXPECT_EQ(deliver(1, {b1[0].id}), 0u);  // not this run's claim
  EXPECT_EQ(deliver(2, {ids[4], ids[5], ids[6], ids[7]}, kNow + 5, &*other), 4u);
  EXPECT_EQ(deliver(1, {ids[0], ids[1], ids[2], ids[3], ids[8], ids[9]}), 6u);
  EXPECT_EQ(deliveries(), (Rows{{ids[0], ids[3]}, {ids[4], ids[7]}, {ids[8], ids[9]}}));
  EXPECT_TRUE(leases().empty());
  expect_states({{"delivered", 10}});
  expect_status_matches_view();
  expect_ranges_consistent();
}

// Claims go by due time across both kinds of row: a range due before an ordinary retry
// goes first, the retry before a range due after it.
TEST_F(PendingRowsTest, AnOlderOrdinaryDueRowComesBeforeALaterPendingRange) {
  const EnqueueCounts retry = enqueue(1, Batch().campaign("retry").domain("r.test"));
  auto first = claim(1, 1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(apply(1, first[0].id, S::kDeferred, 450, {4, 2, 0}), RecipientState::kDeferred);
  exec("UPDATE recipient_rows SET next_attempt_at = " + std::to_string(kNow - 60'000) +
       " WHERE id = " + std::to_string(first[0].id));
  const EnqueueCounts late = enqueue(2, Batch().campaign("late").due(kNow - 1000));
  const EnqueueCounts early = enqueue(2, Batch().campaign("early").due(kNow - 120'000));
  const auto il = ids_of(late.message_id);
  const auto ie = ids_of(early.message_id);

  auto c = claim(1, 3);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].id, ie[0]);
  EXPECT_EQ(c[1].id, ie[1]);
  EXPECT_EQ(c[2].id, first[0].id);
  EXPECT_EQ(c[2].message_id, retry.message_id);
  EXPECT_EQ(c[2].attempts, 1);
  auto rest = claim(1, 3);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].id, il[0]);
  EXPECT_EQ(rest[1].id, il[1]);
  // The retry is an ordinary row in flight; the others are leased by range.
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'in_flight'"), 1);
  EXPECT_EQ(leases(), (Rows{{il[0], il[1], 1}, {ie[0], ie[1], 1}}));
  expect_states({{"in_flight", 5}});
  expect_status_matches_view();

  // With a limit of one, the retry (due earlier) is taken before the later range.
  const EnqueueCounts later = enqueue(1, Batch().campaign("later").due(kNow - 1000));
  ASSERT_EQ(apply(1, first[0].id, S::kDeferred, 451, {4, 3, 0}), RecipientState::kDeferred);
  exec("UPDATE recipient_rows SET next_attempt_at = " + std::to_string(kNow - 2000) +
       " WHERE id = " + std::to_string(first[0].id));
  auto one = claim(1, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].id, first[0].id);
  EXPECT_EQ(one[0].attempts, 2);
  auto two = claim(1, 1);
  ASSERT_EQ(two.size(), 1u);
  EXPECT_EQ(two[0].message_id, later.message_id);
  expect_ranges_consistent();
}

// A store limited to one message (`send`) claims only that message's pending rows, and
// leaves other messages' ranges as they were, though they are due earlier.
TEST_F(PendingRowsTest, LimitToMessageScopesPendingClaims) {
  const EnqueueCounts a = enqueue(3, Batch().campaign("a"));
  const EnqueueCounts b = enqueue(3, Batch().campaign("b").due(kNow - 1000));
  const auto ia = ids_of(a.message_id);
  const auto ib = ids_of(b.message_id);
  auto scoped = open_other();
  ASSERT_TRUE(scoped);
  scoped->limit_to_message(a.message_id);
  auto c = claim(1, 2, kNow, &*scoped);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, ia[0]);
  EXPECT_EQ(c[1].id, ia[1]);
  EXPECT_EQ(unclaimed(),
            (Rows{{kNow, ia[2], ia[2], a.message_id}, {kNow - 1000, ib[0], ib[2], b.message_id}}));
  c = claim(1, 10, kNow, &*scoped);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].id, ia[2]);
  EXPECT_TRUE(claim(1, 10, kNow, &*scoped).empty());
  EXPECT_EQ(unclaimed(), (Rows{{kNow - 1000, ib[0], ib[2], b.message_id}}));
  auto scoped_next = scoped->next_due_at();
  ASSERT_TRUE(scoped_next);
  EXPECT_FALSE(scoped_next->has_value());
  auto next = store_->next_due_at();
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, std::optional<int64_t>(kNow - 1000));
  expect_states({{"in_flight", 3}, {"queued", 3}});
  expect_states({{"in_flight", 3}}, a.message_id);
  expect_states({{"queued", 3}}, b.message_id);
  expect_status_matches_view("a");
  expect_status_matches_view("b");
  EXPECT_EQ(claim(2, 10).size(), 3u);  // unscoped: the other message
  expect_states({{"in_flight", 6}});
  expect_ranges_consistent();
}

// ---------------------------------------------------------------- outcomes

// Delivered pending ids become a deliveries range per run of consecutive ids; their rows
// are not written. The view shows them delivered, with one attempt and the reply; the
// lease goes with the last outcome.
TEST_F(PendingRowsTest, DeliveredPendingIdsBecomeDeliveriesRangesWithoutARowWrite) {
  const EnqueueCounts m = enqueue(5);
  const auto ids = ids_of(m.message_id);
  ASSERT_EQ(claim(4, 5).size(), 5u);
  EXPECT_EQ(deliver(4, {ids[0], ids[1], ids[3]}), 3u);
  EXPECT_EQ(int_rows("SELECT lo, hi, at, code FROM deliveries ORDER BY lo", 4),
            (Rows{{ids[0], ids[1], kNow + 5, 250}, {ids[3], ids[3], kNow + 5, 250}}));
  EXPECT_EQ(query("SELECT count(*) FROM deliveries WHERE enhanced = '2.0.0' AND "
                  "text = 'queued as X'"),
            2);
  // No row written: every one is still pending, as enqueued.
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending' AND attempts = 0 "
                  "AND last_code IS NULL AND lease_owner IS NULL AND updated_at = " +
                  std::to_string(kNow)),
            5);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'delivered' AND attempts = 1 "
                  "AND last_code = 250 AND last_enhanced = '2.0.0' AND last_text = 'queued as X' "
                  "AND lease_owner IS NULL AND lease_expires IS NULL AND updated_at = " +
                  std::to_string(kNow + 5)),
            3);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'in_flight' AND attempts = 0 "
                  "AND lease_owner = 4 AND lease_expires = " +
                  std::to_string(kNow + kLease)),
            2);
  EXPECT_EQ(query("SELECT count(*) FROM attempts"), 0);  // a first-try delivery is not logged
  EXPECT_EQ(leases(), (Rows{{ids[0], ids[4], 4}}));      // two ids still without an outcome
  expect_states({{"delivered", 3}, {"in_flight", 2}});
  expect_status_matches_view();

  EXPECT_EQ(deliver(4, {ids[2], ids[4]}), 2u);
  EXPECT_TRUE(leases().empty());
  EXPECT_EQ(deliveries(),
            (Rows{{ids[0], ids[1]}, {ids[2], ids[2]}, {ids[3], ids[3]}, {ids[4], ids[4]}}));
  expect_states({{"delivered", 5}});
  expect_states({{"delivered", 5}}, m.message_id);
  expect_status_matches_view();
  expect_ranges_consistent();
  // A second outcome for a delivered id changes nothing.
  EXPECT_EQ(deliver(4, {ids[0]}), 0u);
  EXPECT_EQ(apply(4, ids[1], S::kDeferred, 450, {4, 2, 0}), RecipientState::kInFlight);
  expect_states({{"delivered", 5}});
}

// A deferral and a bounce each write the row (it becomes an ordinary one); a drain's
// not-attempted outcome and a release give the id back to an unclaimed range without a
// write; the lease is deleted only with the last outcome of its ids.
TEST_F(PendingRowsTest, OtherOutcomesWriteThePendingRowAndGiveBacksDoNot) {
  const EnqueueCounts m = enqueue(5);
  const auto ids = ids_of(m.message_id);
  ASSERT_EQ(claim(4, 5).size(), 5u);

  EXPECT_EQ(apply(4, ids[0], S::kDeferred, 450, {4, 2, 0}), RecipientState::kDeferred);
  EXPECT_EQ(int_rows("SELECT attempts, last_code, lease_owner IS NULL, next_attempt_at > " +
                         std::to_string(kNow) + " FROM recipient_rows WHERE state = 'deferred'",
                     4),
            (Rows{{1, 450, 1, 1}}));
  EXPECT_EQ(leases().size(), 1u);

  EXPECT_EQ(apply(4, ids[1], S::kBounced, 550, {5, 1, 1}), RecipientState::kBounced);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'bounced' AND attempts = 1 "
                  "AND last_code = 550 AND id = " +
                  std::to_string(ids[1])),
            1);
  EXPECT_EQ(query("SELECT count(*) FROM suppressions WHERE address = 'user1@example.test'"), 1);
  EXPECT_EQ(leases().size(), 1u);

  // Nothing reached the server (the run was stopping): queued again, no attempt, and no
  // row written either: the id goes back to an unclaimed range, the rest of the lease is
  // leased again without it.
  EXPECT_EQ(apply(4, ids[2], S::kDeferred, 0, {4, 3, 2}, /*not_attempted=*/true),
            RecipientState::kQueued);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending' AND attempts = 0 "
                  "AND lease_owner IS NULL AND id = " +
                  std::to_string(ids[2])),
            1);
  EXPECT_EQ(leases(), (Rows{{ids[3], ids[4], 4}}));
  EXPECT_EQ(
      query("SELECT count(*) FROM unclaimed WHERE lo = " + std::to_string(ids[2]) + " AND hi = lo"),
      1);

  release(4, {ids[3]});  // the same for a release
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending' AND attempts = 0 "
                  "AND lease_owner IS NULL AND id = " +
                  std::to_string(ids[3])),
            1);
  EXPECT_EQ(leases(), (Rows{{ids[4], ids[4], 4}}));
  EXPECT_EQ(query("SELECT count(*) FROM attempts"), 2);  // the deferral and the bounce
  expect_states({{"deferred", 1}, {"bounced", 1}, {"queued", 2}, {"in_flight", 1}});
  expect_status_matches_view();
  expect_ranges_consistent();

  EXPECT_EQ(deliver(4, {ids[4]}), 1u);  // the last outcome: the lease goes
  EXPECT_TRUE(leases().empty());
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending'"), 3);
  expect_states({{"deferred", 1}, {"bounced", 1}, {"queued", 2}, {"delivered", 1}});
  expect_status_matches_view();

  // The two given back are claimed again from their ranges (the deferral is not due yet).
  auto again = claim(4, 10, kNow + 1000);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(std::set<int64_t>({again[0].id, again[1].id}), std::set<int64_t>({ids[2], ids[3]}));
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'in_flight' AND "
                  "lease_owner = 4"),
            2);
  EXPECT_EQ(query("SELECT count(*) FROM unclaimed"), 0);
  expect_ranges_consistent();
}

// Once another run has taken the lease over (it expired, say), the first run's outcomes
// for its ids change nothing: no delivery, no row written, the lease stays the other's.
TEST_F(PendingRowsTest, AnOutcomeForALeaseTakenOverByAnotherOwnerChangesNothing) {
  const EnqueueCounts m = enqueue(5);
  const auto ids = ids_of(m.message_id);
  ASSERT_EQ(claim(4, 5).size(), 5u);
  EXPECT_EQ(deliver(4, {ids[0]}), 1u);  // before the take-over: stays delivered
  exec("UPDATE leases SET owner = 99");
  store_->forget_lease_checks();

  EXPECT_EQ(deliver(4, {ids[1]}), 0u);
  EXPECT_EQ(apply(4, ids[2], S::kDeferred, 450, {4, 2, 0}), RecipientState::kInFlight);
  EXPECT_EQ(apply(4, ids[3], S::kBounced, 550, {5, 1, 1}), RecipientState::kInFlight);
  release(4, {ids[4]});

  EXPECT_EQ(deliveries(), (Rows{{ids[0], ids[0]}}));
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending' AND attempts = 0 "
                  "AND lease_owner IS NULL AND last_code IS NULL"),
            5);
  EXPECT_EQ(query("SELECT count(*) FROM attempts"), 0);
  EXPECT_EQ(query("SELECT count(*) FROM suppressions"), 0);
  EXPECT_EQ(leases(), (Rows{{ids[0], ids[4], 99}}));  // not deleted by the loser's outcomes
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'in_flight' AND "
                  "lease_owner = 99"),
            4);
  expect_states({{"delivered", 1}, {"in_flight", 4}});
  expect_status_matches_view();
  expect_ranges_consistent();
}

// ---------------------------------------------------------------- recovery

// A dead run's lease goes back to unclaimed ranges without its delivered ids (or the ids
// its outcomes made ordinary rows); the next claims take those ids again, nothing
// delivered is claimed twice, and the dead run's late outcomes change nothing.
TEST_F(PendingRowsTest, ADeadRunsLeaseComesBackWithoutItsDeliveredIds) {
  const EnqueueCounts m = enqueue(10);
  const auto ids = ids_of(m.message_id);
  auto dead_store = open_other();
  ASSERT_TRUE(dead_store);
  auto dead = register_dead_run(*dead_store);
  ASSERT_TRUE(dead);
  auto live = store_->register_run(kNow);
  ASSERT_TRUE(live) << live.error().message;

  ASSERT_EQ(claim(*dead, 6, kNow, &*dead_store).size(), 6u);
  EXPECT_EQ(deliver(*dead, {ids[0], ids[1], ids[3]}, kNow + 5, &*dead_store), 3u);
  EXPECT_EQ(apply(*dead, ids[4], S::kDeferred, 450, {4, 2, 0}, false, kNow, &*dead_store),
            RecipientState::kDeferred);
  // ids[2] and ids[5] are in flight when the run dies.
  expect_states({{"delivered", 3}, {"deferred", 1}, {"in_flight", 2}, {"queued", 4}});

  const int64_t later = kNow + 1000;
  auto recovered = store_->recover_leases(later);
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(*recovered, 2u);
  EXPECT_TRUE(leases().empty());
  EXPECT_EQ(unclaimed(), (Rows{{later, ids[2], ids[2], m.message_id},
                               {later, ids[4], ids[5], m.message_id},
                               {kNow, ids[6], ids[9], m.message_id}}));
  EXPECT_EQ(query("SELECT count(*) FROM runs"), 1);  // the dead run is forgotten
  expect_states({{"delivered", 3}, {"deferred", 1}, {"queued", 6}});
  expect_status_matches_view();
  expect_ranges_consistent();

  auto again = claim(*live, 100, later);
  std::set<int64_t> claimed;
  for (auto& c : again) EXPECT_TRUE(claimed.insert(c.id).second);
  EXPECT_EQ(claimed, (std::set<int64_t>{ids[2], ids[5], ids[6], ids[7], ids[8], ids[9]}));
  EXPECT_TRUE(unclaimed().empty());
  // The dead run's store, were it still about, no longer holds what it claimed.
  EXPECT_EQ(deliver(*dead, {ids[2]}, kNow + 6, &*dead_store), 0u);
  EXPECT_EQ(apply(*dead, ids[5], S::kDeferred, 450, {4, 2, 0}, false, kNow, &*dead_store),
            RecipientState::kInFlight);
  expect_states({{"delivered", 3}, {"deferred", 1}, {"in_flight", 6}});

  std::vector<int64_t> mine(claimed.begin(), claimed.end());
  EXPECT_EQ(deliver(*live, mine, later + 5), 6u);
  EXPECT_TRUE(leases().empty());
  EXPECT_TRUE(claim(*live, 100, later + 10).empty());
  expect_states({{"delivered", 9}, {"deferred", 1}});
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'delivered' AND attempts = 1"), 9);
  expect_status_matches_view();
  expect_ranges_consistent();
}

// A run that ends with leases still held (outcomes that never came) puts them back as
// unclaimed ranges itself, due now, and forgets its claims of them.
TEST_F(PendingRowsTest, UnregisterRunRequeuesItsOwnLeftoverLeases) {
  const EnqueueCounts m = enqueue(8);
  const auto ids = ids_of(m.message_id);
  auto owner = store_->register_run(kNow);
  ASSERT_TRUE(owner) << owner.error().message;
  ASSERT_EQ(claim(*owner, 5).size(), 5u);
  EXPECT_EQ(deliver(*owner, {ids[0], ids[1]}), 2u);
  const int64_t before = unix_now_ms();
  auto ok = store_->unregister_run(*owner);
  ASSERT_TRUE(ok) << ok.error().message;
  const int64_t after = unix_now_ms();
  EXPECT_TRUE(leases().empty());
  EXPECT_EQ(query("SELECT count(*) FROM runs"), 0);
  auto ranges = unclaimed();
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_GE(ranges[0][0], before);
  EXPECT_LE(ranges[0][0], after);
  EXPECT_EQ(ranges[0][1], ids[2]);
  EXPECT_EQ(ranges[0][2], ids[4]);
  EXPECT_EQ(ranges[1], (std::vector<int64_t>{kNow, ids[5], ids[7], m.message_id}));
  expect_states({{"delivered", 2}, {"queued", 6}});
  expect_status_matches_view();

  // Its claims are forgotten: a late outcome for one of them is no delivery.
  EXPECT_EQ(deliver(*owner, {ids[2]}), 0u);
  EXPECT_EQ(deliveries(), (Rows{{ids[0], ids[1]}}));
  auto again = claim(7, 100, after + 1);
  std::set<int64_t> claimed;
  for (auto& c : again) claimed.insert(c.id);
  EXPECT_EQ(claimed, (std::set<int64_t>{ids[2], ids[3], ids[4], ids[5], ids[6], ids[7]}));
  expect_states({{"delivered", 2}, {"in_flight", 6}});
  expect_ranges_consistent();
}

// The service's minute check (only_dead_runs) takes back a dead run's pending leases too,
// and leaves a live run's alone even once expired.
TEST_F(PendingRowsTest, TheServicesCheckTakesBackOnlyDeadRunsPendingLeases) {
  const EnqueueCounts m = enqueue(6);
  const auto ids = ids_of(m.message_id);
  auto dead_store = open_other();
  ASSERT_TRUE(dead_store);
  auto dead = register_dead_run(*dead_store);
  auto live = store_->register_run(kNow);
  ASSERT_TRUE(dead && live);
  ASSERT_EQ(claim(*dead, 3, kNow, &*dead_store).size(), 3u);
  ASSERT_EQ(claim(*live, 3).size(), 3u);
  EXPECT_EQ(deliver(*dead, {ids[1]}, kNow + 5, &*dead_store), 1u);
  auto recovered = store_->recover_leases(kNow + 2 * kLease, /*only_dead_runs=*/true);
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(*recovered, 2u);
  EXPECT_EQ(leases(), (Rows{{ids[3], ids[5], *live}}));
  EXPECT_EQ(unclaimed(), (Rows{{kNow + 2 * kLease, ids[0], ids[0], m.message_id},
                               {kNow + 2 * kLease, ids[2], ids[2], m.message_id}}));
  expect_states({{"delivered", 1}, {"in_flight", 3}, {"queued", 2}});
  expect_status_matches_view();
  expect_ranges_consistent();
}

// ---------------------------------------------------------------- postponement, suppression

// A paused domain's waiting pending rows become ordinary queued rows due at the pause's
// end; its leased and delivered pending rows are left alone, and so is another domain.
TEST_F(PendingRowsTest, PostponeDomainTouchesOnlyWaitingPendingRows) {
  const EnqueueCounts slow = enqueue(6, Batch().domain("slow.test"));
  const EnqueueCounts fast = enqueue(2, Batch().campaign("c2").domain("fast.test"));
  const auto ids = ids_of(slow.message_id);
  const auto fast_ids = ids_of(fast.message_id);
  ASSERT_EQ(claim(4, 2).size(), 2u);    // ids[0], ids[1]
  EXPECT_EQ(deliver(4, {ids[0]}), 1u);  // ids[1] stays leased
  const int64_t until = kNow + 600'000;
  auto moved = store_->postpone_domain("mx.slow.test", "slow.test", until);
  ASSERT_TRUE(moved) << moved.error().message;
  EXPECT_EQ(*moved, 4u);
  EXPECT_EQ(int_rows("SELECT id, state = 'pending', next_attempt_at FROM recipient_rows "
                     "WHERE domain = 'slow.test' ORDER BY id",
                     3),
            (Rows{{ids[0], 1, kNow},
                  {ids[1], 1, kNow},
                  {ids[2], 0, until},
                  {ids[3], 0, until},
                  {ids[4], 0, until},
                  {ids[5], 0, until}}));
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'queued'"), 4);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE domain = 'fast.test' AND "
                  "state = 'pending' AND next_attempt_at = " +
                  std::to_string(kNow)),
            2);
  expect_states({{"delivered", 1}, {"in_flight", 1}, {"queued", 6}});
  expect_states({{"delivered", 1}, {"in_flight", 1}, {"queued", 4}}, slow.message_id);
  expect_status_matches_view();

  // The slow domain's range now holds no pending row: the claim drops it and takes only
  // the other domain.
  auto c = claim(4, 10);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(std::set<int64_t>({c[0].id, c[1].id}),
            std::set<int64_t>(fast_ids.begin(), fast_ids.end()));
  EXPECT_TRUE(unclaimed().empty());
  auto next = store_->next_due_at();
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, std::optional<int64_t>(until));
  auto report = store_->status(std::nullopt);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->next_due_at, std::optional<int64_t>(until));

  // The leased row is still the run's to deliver; a second postponement moves nothing.
  EXPECT_EQ(deliver(4, {ids[1]}), 1u);
  moved = store_->postpone_domain("mx.slow.test", "slow.test", until);
  ASSERT_TRUE(moved);
  EXPECT_EQ(*moved, 0u);
  auto due = claim(4, 10, until);
  ASSERT_EQ(due.size(), 4u);
  for (auto& r : due) EXPECT_EQ(r.attempts, 0);
  expect_states({{"delivered", 2}, {"in_flight", 6}});
  expect_status_matches_view();
  expect_ranges_consistent();
}

// Addresses suppressed after the enqueue: a waiting pending row becomes suppressed, a
// leased or delivered one is left alone; the leased one, back in an unclaimed range after
// its run's end, is suppressed at the next check.
TEST_F(PendingRowsTest, ApplySuppressionsTouchesOnlyWaitingPendingRows) {
  const EnqueueCounts m = enqueue(5);  // user0..user4
  const auto ids = ids_of(m.message_id);
  ASSERT_EQ(claim(4, 2).size(), 2u);
  EXPECT_EQ(deliver(4, {ids[0]}), 1u);
  for (const char* a : {"user0@example.test", "USER1@example.test", "user3@example.test"})
    ASSERT_TRUE(store_->suppress(a, "manual", kNow));
  auto n = store_->apply_suppressions(kNow + 10);
  ASSERT_TRUE(n) << n.error().message;
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(int_rows("SELECT id, updated_at FROM recipient_rows WHERE state = 'suppressed'", 2),
            (Rows{{ids[3], kNow + 10}}));
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending'"), 4);
  expect_states({{"delivered", 1}, {"in_flight", 1}, {"queued", 2}, {"suppressed", 1}});
  expect_status_matches_view();

  auto c = claim(4, 10);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, ids[2]);
  EXPECT_EQ(c[1].id, ids[4]);
  // Owner 4 is no registered run: its leases are taken back, ids[1] among them.
  auto recovered = store_->recover_leases(kNow + 20);
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(*recovered, 3u);
  n = store_->apply_suppressions(kNow + 30);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'suppressed' AND id = " +
                  std::to_string(ids[1])),
            1);
  expect_states({{"delivered", 1}, {"queued", 2}, {"suppressed", 2}});
  auto again = claim(4, 10, kNow + 30);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(std::set<int64_t>({again[0].id, again[1].id}), std::set<int64_t>({ids[2], ids[4]}));
  expect_status_matches_view();
  expect_ranges_consistent();
}

// ---------------------------------------------------------------- purge

// purge_final removes delivered pending rows older than the cut-off (their deliveries
// range's time), counts them as delivered, and drops the ranges left without rows;
// newer ones, and every other state, stay.
TEST_F(PendingRowsTest, PurgeFinalRemovesOldDeliveredPendingRows) {
  const EnqueueCounts m = enqueue(7);
  const auto ids = ids_of(m.message_id);
  ASSERT_EQ(claim(4, 7).size(), 7u);
  EXPECT_EQ(deliver(4, {ids[0], ids[1], ids[2], ids[3]}), 4u);
  EXPECT_EQ(deliver(4, {ids[6]}), 1u);
  ASSERT_EQ(apply(4, ids[4], S::kDeferred, 450, {4, 2, 0}), RecipientState::kDeferred);
  // ids[5] stays in flight.
  enqueue(1, Batch().campaign("tail").domain("tail.test"));  // the newest row always stays
  exec("UPDATE deliveries SET at = " + std::to_string(kNow - 100'000) +
       " WHERE lo = " + std::to_string(ids[0]));
  exec("UPDATE deliveries SET at = " + std::to_string(kNow + 100'000) +
       " WHERE lo = " + std::to_string(ids[6]));
  const int64_t cutoff = kNow - 1000;

  auto dry = store_->purge_final(cutoff, std::nullopt, true);
  ASSERT_TRUE(dry) << dry.error().message;
  EXPECT_EQ(dry->recipients[RecipientState::kDelivered], 4u);
  EXPECT_EQ(dry->recipients_total(), 4u);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows"), 8);

  auto purged = store_->purge_final(cutoff, std::nullopt, false, 100);
  ASSERT_TRUE(purged) << purged.error().message;
  EXPECT_EQ(purged->recipients[RecipientState::kDelivered], 4u);
  EXPECT_EQ(purged->recipients_total(), 4u);
  EXPECT_EQ(purged->attempts, 0u);
  EXPECT_EQ(purged->bodies, 0u);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE id BETWEEN " + std::to_string(ids[0]) +
                  " AND " + std::to_string(ids[3])),
            0);
  EXPECT_EQ(deliveries(), (Rows{{ids[6], ids[6]}}));
  expect_states({{"delivered", 1}, {"deferred", 1}, {"in_flight", 1}, {"queued", 1}});
  expect_status_matches_view();
  expect_ranges_consistent();

  // The lease still holds ids[5]: its delivery still counts.
  EXPECT_EQ(leases(), (Rows{{ids[0], ids[6], 4}}));
  EXPECT_EQ(deliver(4, {ids[5]}), 1u);
  EXPECT_TRUE(leases().empty());
  // Later, with a later cut-off, the rest of the message's delivered rows go.
  exec("UPDATE deliveries SET at = " + std::to_string(kNow - 100'000));
  auto rest = store_->purge_final(kNow, std::nullopt, false, 100);
  ASSERT_TRUE(rest) << rest.error().message;
  EXPECT_EQ(rest->recipients[RecipientState::kDelivered], 2u);
  EXPECT_TRUE(deliveries().empty());
  expect_states({{"deferred", 1}, {"queued", 1}});
  expect_ranges_consistent();
}

// A deliveries range across a batch boundary stays while some of its rows do (the view
// still says delivered), and is gone after both batches: purge_final's and
// purge_final_step's.
TEST_F(PendingRowsTest, ADeliveriesRangeAcrossABatchBoundaryIsGoneAfterBothSteps) {
  const EnqueueCounts m = enqueue(7);
  const auto ids = ids_of(m.message_id);
  enqueue(1, Batch().campaign("tail").domain("tail.test"));
  ASSERT_EQ(claim(4, 7).size(), 7u);
  EXPECT_EQ(deliver(4, {ids[1], ids[2], ids[3], ids[4], ids[5]}), 5u);
  EXPECT_EQ(deliver(4, {ids[0]}), 1u);
  EXPECT_EQ(deliver(4, {ids[6]}), 1u);
  exec("UPDATE deliveries SET at = " + std::to_string(kNow - 10));
  // created_at is kNow: a step goes on only past recipients enqueued before the cut-off.
  const int64_t cutoff = kNow + 1;

  PurgeCounts counts;
  std::set<int64_t> bodies;  // messages that lost rows: a step of their own drops bodies
  auto step = [&](int64_t from) -> std::optional<int64_t> {
    auto next = store_->purge_final_step(cutoff, from, 3, counts, bodies);
    EXPECT_TRUE(next) << next.error().message;
    return next ? *next : std::nullopt;
  };
  EXPECT_EQ(step(0), std::optional<int64_t>(ids[3]));  // ids[0..2]
  EXPECT_EQ(counts.recipients[RecipientState::kDelivered], 3u);
  EXPECT_EQ(deliveries(), (Rows{{ids[1], ids[5]}, {ids[6], ids[6]}}));
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'delivered' AND updated_at = " +
                  std::to_string(kNow - 10)),
            4);
  expect_states({{"delivered", 4}, {"queued", 1}});
  expect_ranges_consistent();
  EXPECT_EQ(bodies, std::set<int64_t>({m.message_id}));
  EXPECT_EQ(step(ids[3]), std::optional<int64_t>(ids[3]));  // the message still has rows
  EXPECT_EQ(counts.bodies, 0u);

  EXPECT_EQ(step(ids[3]), std::optional<int64_t>(ids[6]));  // ids[3..5]
  EXPECT_EQ(deliveries(), (Rows{{ids[6], ids[6]}}));
  EXPECT_EQ(step(ids[6]), std::optional<int64_t>(ids[6]));      // bodies
  EXPECT_EQ(step(ids[6]), std::optional<int64_t>(ids[6] + 1));  // ids[6]
  EXPECT_TRUE(deliveries().empty());
  EXPECT_EQ(counts.recipients[RecipientState::kDelivered], 7u);
  EXPECT_EQ(counts.recipients_total(), 7u);
  EXPECT_EQ(step(ids[6] + 1), std::optional<int64_t>(ids[6] + 1));  // bodies
  EXPECT_EQ(counts.bodies, 1u);
  EXPECT_EQ(step(ids[6] + 1), std::nullopt);  // only the newest row is left
  expect_states({{"queued", 1}});
  expect_ranges_consistent();
}

TEST_F(PendingRowsTest, PurgeFinalInSmallBatchesDropsARangeAcrossTheirBoundary) {
  const EnqueueCounts m = enqueue(7);
  const auto ids = ids_of(m.message_id);
  const EnqueueCounts other = enqueue(3, Batch().campaign("c2").domain("other.test"));
  const auto other_ids = ids_of(other.message_id);
  enqueue(1, Batch().campaign("tail").domain("tail.test"));
  ASSERT_EQ(claim(4, 10).size(), 10u);
  EXPECT_EQ(deliver(4, {ids[1], ids[2], ids[3], ids[4], ids[5]}), 5u);
  EXPECT_EQ(deliver(4, {ids[0], ids[6]}), 2u);
  EXPECT_EQ(deliver(4, other_ids), 3u);
  exec("UPDATE deliveries SET at = " + std::to_string(kNow - 10));

  // One campaign only: the other's rows and range stay.
  auto c1 = store_->campaign_id("c1");
  ASSERT_TRUE(c1 && *c1);
  auto only_c1 = store_->purge_final(kNow, *c1, false, 3);
  ASSERT_TRUE(only_c1) << only_c1.error().message;
  EXPECT_EQ(only_c1->recipients[RecipientState::kDelivered], 7u);
  EXPECT_EQ(only_c1->recipients_total(), 7u);
  EXPECT_EQ(only_c1->bodies, 1u);
  EXPECT_EQ(deliveries(), (Rows{{other_ids[0], other_ids[2]}}));
  expect_states({{"delivered", 3}, {"queued", 1}});
  expect_status_matches_view();
  expect_ranges_consistent();

  // Batches of 2 split the other range too.
  auto rest = store_->purge_final(kNow, std::nullopt, false, 2);
  ASSERT_TRUE(rest) << rest.error().message;
  EXPECT_EQ(rest->recipients[RecipientState::kDelivered], 3u);
  EXPECT_TRUE(deliveries().empty());
  expect_states({{"queued", 1}});
  expect_ranges_consistent();
}

// ---------------------------------------------------------------- reports

// A database with every kind of row: pending ones waiting, leased, delivered and taken
// over, ordinary ones of every state. state_counts() (of all and of each message) and
// status() (of all and of each campaign: by campaign, by domain, top replies) count what
// the view says at each stage.
TEST_F(PendingRowsTest, AMixedDatabasesReportsAgreeWithTheView) {
  ASSERT_TRUE(store_->suppress("user1@b.test", "manual", kNow));
  const EnqueueCounts alpha = enqueue(6, Batch().campaign("alpha").domain("a.test"));
  const EnqueueCounts beta1 = enqueue(3, Batch().campaign("beta").domain("b.test"));
  const EnqueueCounts beta2 = enqueue(2, Batch().campaign("beta").domain("a.test").prefix("other"));
  const EnqueueCounts receipts =
      enqueue(2, Batch().campaign("receipts").domain("shop.test").prefix("order").urgent());
  const EnqueueCounts gamma =
      enqueue(3, Batch().campaign("gamma").due(kNow + 600'000).domain("g.test"));
  const auto a = ids_of(alpha.message_id);
  const auto b = ids_of(beta1.message_id);
  const auto o = ids_of(beta2.message_id);
  const auto r = ids_of(receipts.message_id);
  const std::vector<int64_t> messages = {alpha.message_id, beta1.message_id, beta2.message_id,
                                         receipts.message_id, gamma.message_id};
  auto check_all = [&](const char* stage) {
    SCOPED_TRACE(stage);
    EXPECT_EQ(counted_states(), view_states());
    for (int64_t m : messages) EXPECT_EQ(counted_states(m), view_states(m)) << "message " << m;
    expect_status_matches_view();
    for (const char* c : {"alpha", "beta", "receipts", "gamma", "none"})
      expect_status_matches_view(std::string(c));
    expect_ranges_consistent();
  };
  check_all("enqueued");
  expect_states({{"queued", 15}, {"suppressed", 1}});

  auto other = open_other();
  ASSERT_TRUE(other);
  auto mine = claim(1, 5);
  ASSERT_EQ(mine.size(), 5u);
  EXPECT_EQ(mine[0].id, r[0]);
  EXPECT_EQ(mine[1].id, r[1]);
  EXPECT_EQ(mine[4].id, a[2]);
  auto theirs = claim(2, 6, kNow, &*other);
  ASSERT_EQ(theirs.size(), 6u);
  std::vector<int64_t> their_ids;
  for (auto& c : theirs) their_ids.push_back(c.id);
  EXPECT_EQ(their_ids, (std::vector<int64_t>{a[3], a[4], a[5], b[0], b[2], o[0]}));
  check_all("claimed");
  expect_states({{"in_flight", 11}, {"queued", 4}, {"suppressed", 1}});

  EXPECT_EQ(deliver(1, {r[0], r[1]}), 2u);  // ordinary rows
  EXPECT_EQ(deliver(1, {a[0]}), 1u);        // a pending one
  EXPECT_EQ(apply(1, a[1], S::kDeferred, 450, {4, 2, 0}), RecipientState::kDeferred);
  exec("UPDATE recipient_rows SET first_due_at = " + std::to_string(kNow - 6 * 86'400'000LL) +
       " WHERE id = " + std::to_string(a[2]));
  EXPECT_EQ(apply(1, a[2], S::kDeferred, 450, {4, 2, 0}), RecipientState::kExpired);
  check_all("the first run's outcomes");
  EXPECT_EQ(deliver(2, {a[3], a[4]}, kNow + 5, &*other), 2u);
  EXPECT_EQ(apply(2, a[5], S::kBounced, 550, {5, 1, 1}, false, kNow, &*other),
            RecipientState::kBounced);
  release(2, {b[0]}, &*other);
  EXPECT_EQ(apply(2, b[2], S::kDeferred, 0, {4, 3, 2}, true, kNow, &*other),
            RecipientState::kQueued);
  check_all("the second run's outcomes");
  EXPECT_EQ(leases(), (Rows{{o[0], o[0], 2}}));  // every other lease had all its outcomes
  exec("UPDATE leases SET owner = 99");
  check_all("a lease taken over");

  expect_states({{"delivered", 5},
                 {"deferred", 1},
                 {"expired", 1},
                 {"bounced", 1},
                 {"queued", 6},
                 {"in_flight", 1},
                 {"suppressed", 1}});
  expect_states({{"delivered", 3}, {"deferred", 1}, {"expired", 1}, {"bounced", 1}},
                alpha.message_id);
  expect_states({{"queued", 2}, {"suppressed", 1}}, beta1.message_id);
  expect_states({{"in_flight", 1}, {"queued", 1}}, beta2.message_id);
  expect_states({{"delivered", 2}}, receipts.message_id);
  expect_states({{"queued", 3}}, gamma.message_id);
  auto report = store_->status(std::nullopt);
  ASSERT_TRUE(report) << report.error().message;
  ASSERT_EQ(report->top_replies.size(), 3u);
  EXPECT_EQ(report->top_replies[0].code, 250);
  EXPECT_EQ(report->top_replies[0].count, 5u);
  EXPECT_EQ(report->top_replies[1].code, 450);
  EXPECT_EQ(report->top_replies[1].count, 2u);
  EXPECT_EQ(report->top_replies[2].code, 550);
  EXPECT_EQ(report->top_replies[2].count, 1u);
  ASSERT_TRUE(report->oldest_deferred);
  EXPECT_EQ(report->oldest_deferred->address, "user1@a.test");
  EXPECT_EQ(report->next_due_at, std::optional<int64_t>(kNow));  // the released row

  // Everything left is claimed and delivered: the reports follow to the end.
  auto rest = claim(1, 100, kNow + 600'000);
  // b[0], b[2], o[1], gamma's three and the deferral (due by then); o[0] stays the
  // other run's.
  ASSERT_EQ(rest.size(), 7u);
  std::vector<int64_t> ids;
  for (auto& c : rest) ids.push_back(c.id);
  EXPECT_EQ(deliver(1, ids, kNow + 600'005), 7u);
  check_all("delivered");
  expect_states(
      {{"delivered", 12}, {"expired", 1}, {"bounced", 1}, {"in_flight", 1}, {"suppressed", 1}});
}

// leased_by_other_runs() counts each recipient in flight under another run once, under
// the run that holds it: a row of a lease's id range that is in flight as an ordinary row
// (a pending row deferred, then claimed again while the rest of its lease is still out)
// is one recipient, and its own lease_owner's.
TEST_F(PendingRowsTest, LeasedByOtherRunsCountsEachRecipientOnce) {
  const EnqueueCounts m = enqueue(5);
  const auto ids = ids_of(m.message_id);
  auto other = open_other();
  ASSERT_TRUE(other);
  ASSERT_EQ(claim(4, 5, kNow, &*other).size(), 5u);
  ASSERT_EQ(apply(4, ids[0], S::kDeferred, 450, {4, 2, 0}, false, kNow, &*other),
            RecipientState::kDeferred);
  exec("UPDATE recipient_rows SET next_attempt_at = " + std::to_string(kNow - 1) +
       " WHERE id = " + std::to_string(ids[0]));
  // The same run claims its deferral again: five recipients in flight under owner 4.
  auto again = claim(4, 10, kNow, &*other);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].id, ids[0]);
  EXPECT_EQ(leases(), (Rows{{ids[0], ids[4], 4}}));  // ids[1..4] still out
  expect_states({{"in_flight", 5}});
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'in_flight' AND "
                  "lease_owner = 4"),
            5);
  auto foreign = store_->leased_by_other_runs(8);
  ASSERT_TRUE(foreign) << foreign.error().message;
  EXPECT_EQ(foreign->recipients, 5u);
  EXPECT_EQ(foreign->first_expiry_ms, kNow + kLease);

  // Given back and claimed by run 8 instead: four are another run's, one is run 8's own.
  ASSERT_TRUE(other->connection().begin());
  ASSERT_TRUE(other->release(4, ids[0], kNow));
  ASSERT_TRUE(other->connection().commit());
  ASSERT_EQ(claim(8, 10).size(), 1u);
  EXPECT_EQ(query("SELECT count(*) FROM recipients WHERE state = 'in_flight' AND "
                  "lease_owner = 4"),
            4);
  foreign = store_->leased_by_other_runs(8);
  ASSERT_TRUE(foreign) << foreign.error().message;
  EXPECT_EQ(foreign->recipients, 4u);
}

// A range whose rows were all suppressed before their --send-at: status() has nothing
// due; the claim at that time drops the range, and next_due_at() agrees from then on.
TEST_F(PendingRowsTest, ARangeEmptiedBySuppressionIsDroppedByTheClaimAtItsTime) {
  const int64_t at = kNow + 60'000;
  enqueue(2, Batch().due(at));
  for (const char* address : {"user0@example.test", "user1@example.test"})
    ASSERT_TRUE(store_->suppress(address, "manual", kNow));
  auto n = store_->apply_suppressions(kNow);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 2u);
  expect_states({{"suppressed", 2}});
  auto report = store_->status(std::nullopt);
  ASSERT_TRUE(report);
  EXPECT_FALSE(report->next_due_at.has_value());
  EXPECT_TRUE(claim(1, 10, at).empty());
  EXPECT_TRUE(unclaimed().empty());
  auto next = store_->next_due_at();
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->has_value());
}
// A drain gives back most of a claim at once (storage thread: give_back_pending in one
// pass): every other id of a lease, some parked for later, the rest delivered. No row is
// written; the ids go back to unclaimed ranges by due time and the ids still out stay
// leased, each run of them a lease of its own.
TEST_F(PendingRowsTest, ABatchGivenBackLeavesRowsPendingAndTheRestLeased) {
  const EnqueueCounts m = enqueue(10);
  const auto ids = ids_of(m.message_id);
  ASSERT_EQ(claim(4, 10).size(), 10u);
  std::vector<GiveBack> items;
  for (size_t i = 0; i < 10; i += 2) items.push_back({ids[i], kNow, false, false, false, {}});
  items[1].due_ms = kNow + 60'000;  // ids[2]: parked for a minute
  items[1].parked = true;
  items.push_back({ids[0], kNow, false, false, false, {}});        // a repeat changes nothing
  items.push_back({ids[9] + 100, kNow, false, false, false, {}});  // not a claim of ours
  ASSERT_TRUE(store_->connection().begin());
  store_->forget_lease_checks();
  ASSERT_TRUE(store_->give_back_pending(4, items, /*want_addresses=*/true));
  ASSERT_TRUE(store_->connection().commit());
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_TRUE(items[i].handled && items[i].ours) << i;
    EXPECT_EQ(items[i].address, "user" + std::to_string(i == 5 ? 0 : 2 * i) + "@example.test");
  }
  EXPECT_FALSE(items[6].handled);
  EXPECT_EQ(query("SELECT count(*) FROM recipient_rows WHERE state = 'pending'"), 10);
  // Odd ids still out, each a lease; even ids due again, the parked one later.
  Rows expected_leases;
  for (size_t i = 1; i < 10; i += 2) expected_leases.push_back({ids[i], ids[i], 4});
  EXPECT_EQ(leases(), expected_leases);
  EXPECT_EQ(query("SELECT count(*) FROM unclaimed WHERE due_at = " + std::to_string(kNow)), 4);
  EXPECT_EQ(query("SELECT lo FROM unclaimed WHERE due_at = " + std::to_string(kNow + 60'000)),
            ids[2]);
  expect_states({{"queued", 5}, {"in_flight", 5}});
  expect_ranges_consistent();

  // The rest delivered: the leases go; the four due now are claimed again, not the parked.
  EXPECT_EQ(deliver(4, {ids[1], ids[3], ids[5], ids[7], ids[9]}), 5u);
  EXPECT_TRUE(leases().empty());
  auto again = claim(4, 10, kNow + 1000);
  EXPECT_EQ(again.size(), 4u);
  EXPECT_EQ(claim(4, 10, kNow + 61'000).size(), 1u);
  expect_states({{"in_flight", 5}, {"delivered", 5}});
  expect_ranges_consistent();
}

// One range per enqueue: a claim over many one-recipient messages (receipts) reads the
// ranges a page at a time until it is full.
TEST_F(PendingRowsTest, AClaimFillsUpFromManySmallMessages) {
  for (int i = 0; i < 150; ++i) enqueue(1, Batch().prefix("r" + std::to_string(i) + "-"));
  EXPECT_EQ(query("SELECT count(*) FROM unclaimed"), 150);
  EXPECT_EQ(claim(4, 100).size(), 100u);
  EXPECT_EQ(query("SELECT count(*) FROM unclaimed"), 50);
  EXPECT_EQ(claim(4, 100).size(), 50u);
  EXPECT_EQ(query("SELECT count(*) FROM unclaimed"), 0);
  expect_states({{"in_flight", 150}});
  expect_ranges_consistent();
}

// A run whose lease another run recovered (it expired) and that claims some of those ids
// again keeps its new claim: outcomes of the old one for ids it lost do not overwrite it.
TEST_F(PendingRowsTest, AClaimAgainOfIdsALostLeaseHeldIsNotOverwrittenByItsOutcomes) {
  const EnqueueCounts m = enqueue(10);
  const auto ids = ids_of(m.message_id);
  ASSERT_EQ(claim(4, 10).size(), 10u);
  // Run 99 took the lease over: it recovered it and claimed ids[0..4] back.
  exec("DELETE FROM leases");
  exec("INSERT INTO unclaimed(due_at, lo, hi, message_id) VALUES (" + std::to_string(kNow) + ", " +
       std::to_string(ids[0]) + ", " + std::to_string(ids[9]) + ", " +
       std::to_string(m.message_id) + ")");
  ASSERT_EQ(claim(99, 5).size(), 5u);
  // Run 4 claims the rest again (its first claim's ids 5..9 are claimed anew).
  auto mine = claim(4, 10);
  ASSERT_EQ(mine.size(), 5u);
  EXPECT_EQ(mine[0].id, ids[5]);
  // Run 4's outcomes of its first claim for ids[0..4]: not its own any more.
  EXPECT_EQ(deliver(4, {ids[0], ids[1], ids[2], ids[3], ids[4]}), 0u);
  // Its new claim's deliveries count, and end its lease.
  EXPECT_EQ(deliver(4, {ids[5], ids[6], ids[7], ids[8], ids[9]}), 5u);
  EXPECT_EQ(leases(), (Rows{{ids[0], ids[4], 99}}));
  expect_states({{"in_flight", 5}, {"delivered", 5}});
  expect_ranges_consistent();
}

// The same when the claim again starts at the lost lease's first id and stops halfway:
// the lost lease's other ids are not this run's either (its outcomes for them change
// nothing), and what it gives back later keeps its message.
TEST_F(PendingRowsTest, AClaimAgainFromALostLeasesFirstIdForgetsAllOfIt) {
  const EnqueueCounts m = enqueue(10);
  const auto ids = ids_of(m.message_id);
  ASSERT_EQ(claim(4, 10).size(), 10u);
  exec("DELETE FROM leases");  // recovered by another run, whole
  exec("INSERT INTO unclaimed(due_at, lo, hi, message_id) VALUES (" + std::to_string(kNow) + ", " +
       std::to_string(ids[0]) + ", " + std::to_string(ids[9]) + ", " +
       std::to_string(m.message_id) + ")");
  auto again = claim(4, 5);  // a new lease starting at the same id
  ASSERT_EQ(again.size(), 5u);
  EXPECT_EQ(leases(), (Rows{{ids[0], ids[4], 4}}));
  // Outcomes of the first claim for ids[5..9]: they are in an unclaimed range now.
  EXPECT_EQ(deliver(4, {ids[5], ids[6]}), 0u);
  EXPECT_EQ(apply(4, ids[7], S::kDeferred, 0, {4, 3, 2}, /*not_attempted=*/true),
            RecipientState::kInFlight);  // not ours: nothing written
  EXPECT_EQ(
      query("SELECT count(*) FROM unclaimed WHERE message_id = " + std::to_string(m.message_id) +
            " AND lo = " + std::to_string(ids[5]) + " AND hi = " + std::to_string(ids[9])),
      1);
  // The new claim's own outcomes count; the rest is claimed and delivered once.
  release(4, {ids[3], ids[4]});
  EXPECT_EQ(
      query("SELECT count(*) FROM unclaimed WHERE message_id <> " + std::to_string(m.message_id)),
      0);
  EXPECT_EQ(deliver(4, {ids[0], ids[1], ids[2]}), 3u);
  auto rest = claim(4, 10);
  EXPECT_EQ(rest.size(), 7u);
  std::vector<int64_t> rest_ids;
  for (const auto& r : rest) rest_ids.push_back(r.id);
  EXPECT_EQ(deliver(4, rest_ids), 7u);
  EXPECT_TRUE(leases().empty());
  expect_states({{"delivered", 10}});
  expect_ranges_consistent();
}

}  // namespace
}  // namespace ringmail::storage

// QueueStore's pending rows (storage/README.md, "Pending rows and ranges"): a bulk
// recipient's first attempt is claimed and delivered through ranges of ids (`unclaimed`,
// `leases`, `deliveries`) without writing its row; any other outcome makes the row an
// ordinary one again (materialize), and the row's own state counts from then on.
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "storage/queue_store.h"
#include "storage/queue_store_internal.h"

namespace ringmail::storage {

using queue_store_internal::fail;
using queue_store_internal::Status;

// ---------------------------------------------------------------- enqueue

std::expected<void, StorageError> QueueStore::add_pending_id(int64_t id, int64_t message_id,
                                                             int64_t due_at_ms) {
  if (enqueue_range_ && enqueue_range_->due_at_ms == due_at_ms &&
      enqueue_range_->message_id == message_id && enqueue_range_->hi + 1 == id) {
    enqueue_range_->hi = id;
    return {};
  }
  if (auto ok = close_enqueue_range(); !ok) return ok;
  enqueue_range_ = OpenRange{due_at_ms, id, id, message_id};
  return {};
}

std::expected<void, StorageError> QueueStore::close_enqueue_range() {
  if (!enqueue_range_) return {};
  const OpenRange r = *enqueue_range_;
  enqueue_range_.reset();
  auto st = cached(insert_unclaimed_,
                   "INSERT INTO unclaimed(due_at, lo, hi, message_id) VALUES (?1, ?2, ?3, ?4)");
  if (!st) return fail(st);
  (*st)->bind(1, r.due_at_ms).bind(2, r.lo).bind(3, r.hi).bind(4, r.message_id);
  return (*st)->run();
}

// ---------------------------------------------------------------- claim

std::expected<void, StorageError> QueueStore::claim_merged(
    int64_t owner, size_t limit, int64_t now_ms, int64_t lease_expires_ms,
    std::vector<std::pair<int64_t, ClaimedRecipient>>& explicit_rows,
    std::vector<ClaimedRecipient>& out, std::vector<int64_t>& explicit_taken) {
  auto sel = only_message_
                 ? cached(select_unclaimed_of_message_,
                          "SELECT due_at, lo, hi, message_id FROM unclaimed "
                          "WHERE due_at <= ?1 AND message_id = ?3 ORDER BY due_at, lo LIMIT ?2")
                 : cached(select_unclaimed_,
                          "SELECT due_at, lo, hi, message_id FROM unclaimed "
                          "WHERE due_at <= ?1 ORDER BY due_at, lo LIMIT ?2");
  if (!sel) return fail(sel);
  // Ranges are read a page at a time: one per enqueue, so a claim over one-recipient
  // messages (receipts) needs as many ranges as recipients.
  constexpr int64_t kRangesPerRead = 64;
  auto read_ranges = [&](std::vector<UnclaimedRange>& ranges) -> Status {
    Statement& s = **sel;
    s.bind(1, now_ms).bind(2, kRangesPerRead);
    if (only_message_) s.bind(3, *only_message_);
    while (true) {
      auto row = s.step();
      if (!row) {
        s.reset();
        return fail(row);
      }
      if (!*row) break;
      ranges.push_back({s.column_int(0), s.column_int(1), s.column_int(2), s.column_int(3)});
    }
    s.reset();
    return {};
  };
  size_t next_explicit = 0;
  auto take_explicit_due_by = [&](int64_t due) {
    while (next_explicit < explicit_rows.size() && out.size() < limit &&
           explicit_rows[next_explicit].first <= due) {
      explicit_taken.push_back(explicit_rows[next_explicit].second.id);
      out.push_back(std::move(explicit_rows[next_explicit++].second));
    }
  };
  std::vector<UnclaimedRange> ranges;
  while (out.size() < limit) {
    ranges.clear();
    if (auto ok = read_ranges(ranges); !ok) return ok;
    for (const UnclaimedRange& range : ranges) {
      // Earlier due ordinary rows (retries, rows given back long ago) go first.
      take_explicit_due_by(range.due_at);
      if (out.size() >= limit) break;
      if (auto ok = claim_range(owner, range, limit - out.size(), lease_expires_ms, out); !ok)
        return ok;
    }
    // A short page was the last; a full one may have more behind it (those taken whole are
    // gone from the table, a range cut short ends the claim).
    if (ranges.size() < size_t(kRangesPerRead)) break;
  }
  take_explicit_due_by(INT64_MAX);
  return {};
}

std::expected<void, StorageError> QueueStore::claim_range(int64_t owner,
                                                          const UnclaimedRange& range, size_t want,
                                                          int64_t lease_expires_ms,
                                                          std::vector<ClaimedRecipient>& out) {
  auto read = cached(read_pending_,
                     "SELECT id, message_id, address, first_due_at FROM recipient_rows NOT INDEXED "
                     "WHERE id BETWEEN ?1 AND ?2 AND state = 'pending' ORDER BY id LIMIT ?3");
  auto shrink =
      cached(shrink_unclaimed_, "UPDATE unclaimed SET lo = ?3 WHERE due_at = ?1 AND lo = ?2");
  auto drop = cached(drop_unclaimed_, "DELETE FROM unclaimed WHERE due_at = ?1 AND lo = ?2");
  auto lease = cached(insert_lease_,
                      "INSERT INTO leases(lo, hi, owner, expires, message_id) "
                      "VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!read) return fail(read);
  if (!shrink) return fail(shrink);
  if (!drop) return fail(drop);
  if (!lease) return fail(lease);
  Statement& r = **read;
  r.bind(1, range.lo).bind(2, range.hi).bind(3, int64_t(want));
  const size_t first = out.size();
  int64_t last_id = range.lo - 1;
  while (true) {
    auto row = r.step();
    if (!row) {
      r.reset();
      return fail(row);
    }
    if (!*row) break;
    last_id = r.column_int(0);
    out.push_back({last_id, r.column_int(1), r.column_string(2), 0, r.column_int(3), false});
  }
  r.reset();
  const size_t taken = out.size() - first;
  // What is left of the range: after the last id taken, unless the read stopped short of
  // what it wanted (then nothing pending is left in it).
  const bool exhausted = taken < want || last_id >= range.hi;
  Statement& left = exhausted ? **drop : **shrink;
  left.bind(1, range.due_at).bind(2, range.lo);
  if (!exhausted) left.bind(3, last_id + 1);
  if (auto ok = left.run(); !ok) return ok;
  if (taken == 0) return {};
  (*lease)->bind(1, range.lo).bind(2, last_id).bind(3, owner).bind(4, lease_expires_ms);
  (*lease)->bind(5, range.message_id);
  if (auto ok = (*lease)->run(); !ok) return ok;
  forget_claims(range.lo, last_id);
  pending_leases_[range.lo] = PendingLease{last_id, lease_expires_ms, taken, range.message_id};
  leases_checked_.insert(range.lo);
  // Runs of consecutive ids, for split_pending.
  for (size_t i = first; i < out.size();) {
    size_t j = i;
    while (j + 1 < out.size() && out[j + 1].id == out[j].id + 1) ++j;
    pending_runs_[out[i].id] = PendingRun{out[j].id, range.lo};
    i = j + 1;
  }
  return {};
}

// ---------------------------------------------------------------- outcomes

void QueueStore::split_pending(std::span<const int64_t> sorted_ids, std::vector<int64_t>& pending,
                               std::vector<int64_t>& others) const {
  for (int64_t id : sorted_ids) {
    auto it = pending_runs_.upper_bound(id);
    const bool mine = it != pending_runs_.begin() && std::prev(it)->second.last >= id;
    (mine ? pending : others).push_back(id);
  }
}

std::expected<bool, StorageError> QueueStore::lease_is_mine(int64_t owner, int64_t lease_lo) {
  if (leases_checked_.contains(lease_lo)) return true;
  auto st = cached(check_lease_, "SELECT owner FROM leases WHERE lo = ?1");
  if (!st) return fail(st);
  (*st)->bind(1, lease_lo);
  auto row = (*st)->step();
  const bool mine = row && *row && (*st)->column_int(0) == owner;
  (*st)->reset();
  if (!row) return fail(row);
  if (mine) leases_checked_.insert(lease_lo);
  return mine;
}

std::expected<void, StorageError> QueueStore::settle_pending(int64_t owner, int64_t id) {
  auto it = pending_runs_.upper_bound(id);
  if (it == pending_runs_.begin() || std::prev(it)->second.last < id) return {};
  --it;
  const int64_t first = it->first;
  const PendingRun run = it->second;
  pending_runs_.erase(it);
  if (first < id) pending_runs_[first] = PendingRun{id - 1, run.lease_lo};
  if (id < run.last) pending_runs_[id + 1] = PendingRun{run.last, run.lease_lo};
  auto lease = pending_leases_.find(run.lease_lo);
  if (lease == pending_leases_.end() || --lease->second.outstanding > 0) return {};
  pending_leases_.erase(lease);
  leases_checked_.erase(run.lease_lo);
  // Every claimed id of the lease has its outcome: nothing in it is in flight any more.
  auto st = cached(drop_lease_, "DELETE FROM leases WHERE lo = ?1 AND owner = ?2");
  if (!st) return fail(st);
  (*st)->bind(1, run.lease_lo).bind(2, owner);
  return (*st)->run();
}

std::expected<uint64_t, StorageError> QueueStore::deliver_pending(
    int64_t owner, std::span<const int64_t> sorted_ids, const smtp::Reply& reply, int64_t now_ms) {
  auto st = cached(insert_delivery_,
                   "INSERT INTO deliveries(lo, hi, at, code, enhanced, text) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (!st) return fail(st);
  const std::string enhanced = reply.enhanced.to_string();
  uint64_t delivered = 0;
  size_t i = 0;
  while (i < sorted_ids.size()) {
    auto it = std::prev(pending_runs_.upper_bound(sorted_ids[i]));  // split_pending found it
    const int64_t run_last = it->second.last;
    const int64_t lease_lo = it->second.lease_lo;
    size_t j = i;
    while (j + 1 < sorted_ids.size() && sorted_ids[j + 1] == sorted_ids[j] + 1 &&
           sorted_ids[j + 1] <= run_last)
      ++j;
    const int64_t lo = sorted_ids[i];
    const int64_t hi = sorted_ids[j];
    auto mine = lease_is_mine(owner, lease_lo);
    if (!mine) return fail(mine);
    if (*mine) {
      (*st)->bind(1, lo).bind(2, hi).bind(3, now_ms).bind(4, reply.code);
      (*st)->bind_static(5, enhanced).bind_static(6, reply.text);
      if (auto ok = (*st)->run(); !ok) return fail(ok);
      delivered += uint64_t(hi - lo + 1);
    }
    for (size_t k = i; k <= j; ++k)
      if (auto ok = settle_pending(owner, sorted_ids[k]); !ok) return fail(ok);
    i = j + 1;
  }
  return delivered;
}

std::expected<void, StorageError> QueueStore::materialize(int64_t owner,
                                                          std::span<const int64_t> sorted_ids) {
  auto st = cached(materialize_range_,
                   "UPDATE recipient_rows NOT INDEXED SET state = 'in_flight', lease_owner = ?3, "
                   "lease_expires = ?4 WHERE id BETWEEN ?1 AND ?2 AND state = 'pending'");
  if (!st) return fail(st);
  for (int64_t id : sorted_ids) {
    auto it = pending_runs_.upper_bound(id);
    if (it == pending_runs_.begin() || std::prev(it)->second.last < id) continue;
    const int64_t lease_lo = std::prev(it)->second.lease_lo;
    auto mine = lease_is_mine(owner, lease_lo);
    if (!mine) return fail(mine);
    if (*mine) {
      const auto lease = pending_leases_.find(lease_lo);
      const int64_t expires = lease != pending_leases_.end() ? lease->second.expires_ms : 0;
      (*st)->bind(1, id).bind(2, id).bind(3, owner).bind(4, expires);
      if (auto ok = (*st)->run(); !ok) return ok;
    }
    if (auto ok = settle_pending(owner, id); !ok) return ok;
  }
  return {};
}

void QueueStore::forget_claims(int64_t lo, int64_t hi) {
  // Ids of an old claim of this process are unclaimed again only when another run
  // recovered its lease, and recovery takes a lease whole: every id of it is lost, not
  // only those claimed again now (the rest may come next, under a lease starting at the
  // same id as the old one).
  std::set<int64_t> lost;
  auto it = pending_runs_.upper_bound(lo);
  if (it != pending_runs_.begin() && std::prev(it)->second.last >= lo) --it;
  for (; it != pending_runs_.end() && it->first <= hi; ++it) lost.insert(it->second.lease_lo);
  if (lost.empty()) return;
  std::erase_if(pending_runs_, [&](const auto& run) { return lost.contains(run.second.lease_lo); });
  for (int64_t lease_lo : lost) {
    pending_leases_.erase(lease_lo);
    leases_checked_.erase(lease_lo);
  }
}

std::expected<void, StorageError> QueueStore::give_back_pending(int64_t owner,
                                                                std::vector<GiveBack>& items,
                                                                bool want_addresses) {
  // The items of each lease of this process's claims, by the lease's first id.
  std::map<int64_t, std::vector<GiveBack*>> by_lease;
  for (GiveBack& item : items) {
    auto it = pending_runs_.upper_bound(item.id);
    if (it == pending_runs_.begin() || std::prev(it)->second.last < item.id) continue;
    by_lease[std::prev(it)->second.lease_lo].push_back(&item);
  }
  if (by_lease.empty()) return {};
  auto read = cached(read_given_back_, "SELECT address, domain FROM recipient_rows WHERE id = ?1");
  auto drop = cached(drop_lease_, "DELETE FROM leases WHERE lo = ?1 AND owner = ?2");
  auto lease = cached(insert_lease_,
                      "INSERT INTO leases(lo, hi, owner, expires, message_id) "
                      "VALUES (?1, ?2, ?3, ?4, ?5)");
  auto unclaimed =
      cached(insert_unclaimed_,
             "INSERT INTO unclaimed(due_at, lo, hi, message_id) VALUES (?1, ?2, ?3, ?4)");
  if (!read) return fail(read);
  if (!drop) return fail(drop);
  if (!lease) return fail(lease);
  if (!unclaimed) return fail(unclaimed);
  for (auto& [lease_lo, given] : by_lease) {
    for (GiveBack* item : given) item->handled = true;
    auto mine = lease_is_mine(owner, lease_lo);
    if (!mine) return fail(mine);
    const auto found = pending_leases_.find(lease_lo);
    if (!*mine || found == pending_leases_.end()) {  // another run recovered the lease
      for (GiveBack* item : given)
        if (auto ok = settle_pending(owner, item->id); !ok) return ok;
      continue;
    }
    const PendingLease held = found->second;
    // The address for the log, the domain for a pause that outlasts a parked recipient's
    // wait (as apply() does for an ordinary row).
    for (GiveBack* item : given) {
      item->ours = true;
      if (!want_addresses && (postponed_.empty() || !item->parked)) continue;
      (*read)->bind(1, item->id);
      auto row = (*read)->step();
      if (!row) {
        (*read)->reset();
        return fail(row);
      }
      if (*row) {
        item->address = (*read)->column_string(0);
        auto p = item->parked ? postponed_.find((*read)->column_string(1)) : postponed_.end();
        if (p != postponed_.end()) item->due_ms = std::max(item->due_ms, p->second.until_ms);
      }
      (*read)->reset();
    }
    std::sort(given.begin(), given.end(),
              [](const GiveBack* a, const GiveBack* b) { return a->id < b->id; });
    given.erase(std::unique(given.begin(), given.end(),
                            [](const GiveBack* a, const GiveBack* b) { return a->id == b->id; }),
                given.end());
    // What stays claimed: the lease's claimed runs less the ids given back, each run a
    // lease of its own (ranges of one kind never overlap, so the old one goes).
    std::vector<std::pair<int64_t, int64_t>> kept;
    size_t g = 0;
    for (auto it = pending_runs_.lower_bound(lease_lo);
         it != pending_runs_.end() && it->first <= held.hi;) {
      if (it->second.lease_lo != lease_lo) {
        ++it;
        continue;
      }
      for (int64_t id = it->first; id <= it->second.last;) {
        while (g < given.size() && given[g]->id < id) ++g;
        const int64_t stop =
            g < given.size() ? std::min(given[g]->id, it->second.last + 1) : it->second.last + 1;
        if (stop > id) {
          kept.emplace_back(id, stop - 1);
          id = stop;
        } else {
          id = given[g]->id + 1;  // given back: skipped
        }
      }
      it = pending_runs_.erase(it);
    }
    pending_leases_.erase(lease_lo);
    leases_checked_.erase(lease_lo);
    (*drop)->bind(1, lease_lo).bind(2, owner);
    if (auto ok = (*drop)->run(); !ok) return ok;
    for (const auto& [lo, hi] : kept) {
      (*lease)->bind(1, lo).bind(2, hi).bind(3, owner).bind(4, held.expires_ms);
      (*lease)->bind(5, held.message_id);
      if (auto ok = (*lease)->run(); !ok) return ok;
      pending_runs_[lo] = PendingRun{hi, lo};
      pending_leases_[lo] =
          PendingLease{hi, held.expires_ms, uint64_t(hi - lo + 1), held.message_id};
      leases_checked_.insert(lo);
    }
    // The ids given back, as unclaimed ranges of consecutive ids due at the same time.
    for (size_t i = 0; i < given.size();) {
      size_t j = i;
      while (j + 1 < given.size() && given[j + 1]->id == given[j]->id + 1 &&
             given[j + 1]->due_ms == given[i]->due_ms)
        ++j;
      (*unclaimed)->bind(1, given[i]->due_ms).bind(2, given[i]->id).bind(3, given[j]->id);
      (*unclaimed)->bind(4, held.message_id);
      if (auto ok = (*unclaimed)->run(); !ok) return ok;
      i = j + 1;
    }
  }
  return {};
}

// ---------------------------------------------------------------- recovery

std::expected<uint64_t, StorageError> QueueStore::requeue_leases(std::string_view owner_condition,
                                                                 int64_t now_ms,
                                                                 std::string_view json2,
                                                                 std::string_view json3) {
  struct Lease {
    int64_t lo, hi, message_id;
  };
  std::vector<Lease> leases;
  {
    auto st = db_.prepare(
        fmt::format("SELECT lo, hi, message_id FROM leases WHERE {} ORDER BY lo", owner_condition));
    if (!st) return fail(st);
    st->bind(1, now_ms).bind_static(2, json2);
    if (!json3.empty()) st->bind_static(3, json3);
    while (true) {
      auto row = st->step();
      if (!row) return fail(row);
      if (!*row) break;
      leases.push_back({st->column_int(0), st->column_int(1), st->column_int(2)});
    }
  }
  if (leases.empty()) return 0;
  auto delivered =
      db_.prepare("SELECT lo, hi FROM deliveries WHERE lo BETWEEN ?1 AND ?2 ORDER BY lo");
  auto count = db_.prepare(
      "SELECT count(*) FROM recipient_rows NOT INDEXED WHERE id BETWEEN ?1 AND ?2 AND "
      "state = 'pending'");
  auto insert =
      db_.prepare("INSERT INTO unclaimed(due_at, lo, hi, message_id) VALUES (?1, ?2, ?3, ?4)");
  auto drop = db_.prepare("DELETE FROM leases WHERE lo = ?1");
  if (!delivered) return fail(delivered);
  if (!count) return fail(count);
  if (!insert) return fail(insert);
  if (!drop) return fail(drop);
  uint64_t requeued = 0;
  for (const Lease& l : leases) {
    // The lease's ids less its deliveries (each inside the lease: a delivery is of ids
    // one lease claimed) are due again now.
    std::vector<std::pair<int64_t, int64_t>> gaps;
    int64_t next = l.lo;
    delivered->bind(1, l.lo).bind(2, l.hi);
    while (true) {
      auto row = delivered->step();
      if (!row) return fail(row);
      if (!*row) break;
      if (delivered->column_int(0) > next) gaps.emplace_back(next, delivered->column_int(0) - 1);
      next = std::max(next, delivered->column_int(1) + 1);
    }
    delivered->reset();
    if (next <= l.hi) gaps.emplace_back(next, l.hi);
    drop->bind(1, l.lo);
    if (auto ok = drop->run(); !ok) return fail(ok);
    for (const auto& [lo, hi] : gaps) {
      count->bind(1, lo).bind(2, hi);
      auto row = count->step();
      const int64_t n = row && *row ? count->column_int(0) : 0;
      count->reset();
      if (!row) return fail(row);
      if (n == 0) continue;
      requeued += uint64_t(n);
      insert->bind(1, now_ms).bind(2, lo).bind(3, hi).bind(4, l.message_id);
      if (auto ok = insert->run(); !ok) return fail(ok);
    }
    // A lease of this process's own (unregister_run) is forgotten here too.
    for (auto it = pending_runs_.lower_bound(l.lo); it != pending_runs_.end() && it->first <= l.hi;)
      it = pending_runs_.erase(it);
    pending_leases_.erase(l.lo);
    leases_checked_.erase(l.lo);
  }
  return requeued;
}

}  // namespace ringmail::storage

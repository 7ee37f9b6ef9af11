// QueueStore's read-only reports: recipient counts by state, campaign and domain, the
// paused destinations, the oldest deferral, the commonest replies and when work is next
// due (`ringmail status`, the end of a run, the metrics scrape).
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <utility>

#include "storage/queue_store.h"
#include "storage/queue_store_internal.h"

namespace ringmail::storage {

using queue_store_internal::fail;
using queue_store_internal::kLeasedPendingRow;
using queue_store_internal::Status;

// ---------------------------------------------------------------- reports

std::expected<std::vector<DestinationStatus>, StorageError> QueueStore::paused_destinations() {
  auto st = db_.prepare(
      "SELECT name, coalesce(paused_until, 0), failures, coalesce(last_code, 0), "
      "coalesce(last_enhanced, ''), coalesce(last_text, ''), updated_at FROM destinations "
      "WHERE state = 'paused' AND paused_until > ?1 ORDER BY name");
  if (!st) return fail(st);
  // A pause whose end has passed is no pause: the row stays 'paused' until the next run
  // reaches that destination (and never changes if nothing goes there any more).
  st->bind(1, unix_now_ms());
  std::vector<DestinationStatus> out;
  while (true) {
    auto row = st->step();
    if (!row) return fail(row);
    if (!*row) break;
    out.push_back({st->column_string(0), true, st->column_int(1), st->column_int(2),
                   static_cast<int>(st->column_int(3)), st->column_string(4),
                   st->column_string(5), st->column_int(6)});
  }
  return out;
}

std::expected<StatusReport, StorageError> QueueStore::status(std::optional<std::string> campaign,
                                                             size_t top_replies) {
  StatusReport report;
  auto paused = paused_destinations();
  if (!paused) return fail(paused);
  report.paused_destinations = std::move(*paused);
  // ?1 NULL: every campaign. Read from the rows, not through the view (its two range
  // lookups per row made `status` of a million recipients take 2.7 s instead of 1.8 s):
  // a pending row counts as queued, then the pending rows that the deliveries and leases
  // cover (walked by rowid range, `+r.state`: no index for the planner to scan per range)
  // move from queued to delivered and in flight.
  const std::string rows_join =
      " FROM recipient_rows r JOIN messages m ON m.id = r.message_id "
      "JOIN campaigns c ON c.id = m.campaign_id WHERE (?1 IS NULL OR c.name = ?1) ";
  const std::string delivered_join =
      " FROM deliveries d CROSS JOIN recipient_rows r ON r.id BETWEEN d.lo AND d.hi "
      "CROSS JOIN messages m ON m.id = r.message_id CROSS JOIN campaigns c ON c.id = "
      "m.campaign_id WHERE (?1 IS NULL OR c.name = ?1) AND +r.state = 'pending' ";
  const std::string leased_join = fmt::format(
      " FROM leases l CROSS JOIN recipient_rows r ON r.id BETWEEN l.lo AND l.hi "
      "CROSS JOIN messages m ON m.id = r.message_id CROSS JOIN campaigns c ON c.id = "
      "m.campaign_id WHERE (?1 IS NULL OR c.name = ?1) AND {} ",
      kLeasedPendingRow);
  auto bind_campaign = [&](Statement& s) {
    if (campaign) {
      s.bind(1, *campaign);
    } else {
      s.bind_null(1);
    }
  };
  auto counts = [&](std::string_view group, std::vector<StateCount>& out) -> Status {
    auto st = db_.prepare(fmt::format(
        "SELECT {0}, CASE r.state WHEN 'pending' THEN 'queued' ELSE r.state END, count(*){1} "
        "GROUP BY 1, 2 UNION ALL SELECT {0}, 'delivered', -count(*){2} GROUP BY 1 "
        "UNION ALL SELECT {0}, 'in_flight', -count(*){3} GROUP BY 1",
        group, rows_join, delivered_join, leased_join));
    if (!st) return fail(st);
    bind_campaign(*st);
    std::map<std::pair<std::string, std::string>, int64_t> by_group;  // ordered as before
    while (true) {
      auto row = st->step();
      if (!row) return fail(row);
      if (!*row) break;
      const int64_t n = st->column_int(2);
      if (n >= 0) {
        by_group[{st->column_string(0), st->column_string(1)}] += n;
      } else {  // a negative count: pending rows that are not queued but this state
        by_group[{st->column_string(0), st->column_string(1)}] -= n;
        by_group[{st->column_string(0), "queued"}] += n;
      }
    }
    for (const auto& [key, n] : by_group) {
      auto state = parse_state(key.second);
      if (state && n > 0) out.push_back({key.first, *state, static_cast<uint64_t>(n)});
    }
    return {};
  };
  if (auto ok = counts("c.name", report.by_campaign); !ok) return fail(ok);
  if (auto ok = counts("r.domain", report.by_domain); !ok) return fail(ok);

  auto oldest = db_.prepare(
      "SELECT r.address, c.name, r.first_due_at, r.next_attempt_at, r.attempts, "
      "coalesce(r.last_code, 0), coalesce(r.last_enhanced, ''), coalesce(r.last_text, '')" +
      rows_join + "AND r.state = 'deferred' ORDER BY r.first_due_at, r.id LIMIT 1");
  if (!oldest) return fail(oldest);
  bind_campaign(*oldest);
  auto row = oldest->step();
  if (!row) return fail(row);
  if (*row) {
    Statement& s = *oldest;
    report.oldest_deferred =
        OldestDeferred{s.column_string(0), s.column_string(1), s.column_int(2),
                       s.column_int(3),    s.column_int(4),    static_cast<int>(s.column_int(5)),
                       s.column_string(6), s.column_string(7)};
  }

  // The last replies of rows with a state of their own, and of delivered pending rows
  // their deliveries' replies, one per row.
  auto replies =
      db_.prepare("SELECT r.last_code, coalesce(r.last_enhanced, ''), count(*)" + rows_join +
                  "AND r.last_code IS NOT NULL GROUP BY 1, 2 UNION ALL "
                  "SELECT d.code, d.enhanced, count(*)" +
                  delivered_join + "GROUP BY 1, 2");
  if (!replies) return fail(replies);
  bind_campaign(*replies);
  std::map<std::pair<int, std::string>, uint64_t> reply_counts;
  while (true) {
    auto r = replies->step();
    if (!r) return fail(r);
    if (!*r) break;
    reply_counts[{static_cast<int>(replies->column_int(0)), replies->column_string(1)}] +=
        static_cast<uint64_t>(replies->column_int(2));
  }
  for (const auto& [reply, n] : reply_counts)
    report.top_replies.push_back({reply.first, reply.second, n});
  // The most frequent first; ties by code, then enhanced code.
  std::stable_sort(report.top_replies.begin(), report.top_replies.end(),
                   [](const ReplyCount& a, const ReplyCount& b) { return a.count > b.count; });
  if (report.top_replies.size() > top_replies) report.top_replies.resize(top_replies);

  // A campaign's rows are reached through its messages (recipients_by_message): CROSS JOIN
  // keeps recipients the inner loop, so the planner cannot instead walk the due index
  // past every earlier row of other campaigns to find a campaign scheduled far ahead.
  // Pending rows waiting for their claim are due with their unclaimed range (one that
  // lost all its pending rows, to a postponement say, waits for a claim to drop it).
  auto due = db_.prepare(campaign ? "SELECT min(due) FROM (SELECT min(r.next_attempt_at) AS due "
                                    "FROM campaigns c JOIN messages m ON m.campaign_id = c.id "
                                    "CROSS JOIN recipient_rows r INDEXED BY "
                                    "recipients_by_message ON r.message_id = m.id "
                                    "WHERE c.name = ?1 AND r.state IN ('queued', 'deferred') "
                                    "UNION ALL SELECT min(u.due_at) FROM campaigns c "
                                    "JOIN messages m ON m.campaign_id = c.id "
                                    "JOIN unclaimed u ON u.message_id = m.id WHERE c.name = ?1 "
                                    "AND EXISTS (SELECT 1 FROM recipient_rows r WHERE r.id "
                                    "BETWEEN u.lo AND u.hi AND +r.state = 'pending'))"
                                  : "SELECT min(due) FROM (SELECT min(next_attempt_at) AS due "
                                    "FROM recipient_rows INDEXED BY recipients_due "
                                    "WHERE state IN ('queued', 'deferred') "
                                    "UNION ALL SELECT min(due_at) FROM unclaimed u WHERE EXISTS "
                                    "(SELECT 1 FROM recipient_rows r WHERE r.id BETWEEN u.lo "
                                    "AND u.hi AND +r.state = 'pending'))");
  if (!due) return fail(due);
  if (campaign) due->bind(1, *campaign);
  auto due_row = due->step();
  if (!due_row) return fail(due_row);
  if (*due_row && !due->column_is_null(0)) report.next_due_at = due->column_int(0);
  return report;
}

std::expected<std::vector<std::pair<RecipientState, uint64_t>>, StorageError>
QueueStore::state_counts(std::optional<int64_t> message_id) {
  // Rows with a state of their own counted through recipients_by_state (a walk of the
  // index, no sort, no read of the rows), pending ones as the table's count (its b-tree's
  // cells, no row read) less those; then pending rows split by the ranges that cover them
  // (queue_pending.cc): walked by rowid range, not through the view (its two range lookups
  // per row tripled the pass). `+r.state`: no index for the planner to scan once per range.
  // One message's rows are read through recipients_by_message instead.
  std::map<std::string, int64_t> by_word;
  auto by_state = db_.prepare(message_id ? "SELECT state, count(*) FROM recipient_rows "
                                           "WHERE message_id = ?1 GROUP BY state"
                                         : "SELECT state, count(*) FROM recipient_rows WHERE "
                                           "state <> 'pending' GROUP BY state UNION ALL "
                                           "SELECT 'all', count(*) FROM recipient_rows");
  if (!by_state) return fail(by_state);
  if (message_id) by_state->bind(1, *message_id);
  while (true) {
    auto row = by_state->step();
    if (!row) return fail(row);
    if (!*row) break;
    by_word[by_state->column_string(0)] += by_state->column_int(1);
  }
  if (!message_id) {
    int64_t pending = by_word["all"];
    for (const auto& [word, n] : by_word)
      if (word != "all") pending -= n;
    by_word["pending"] = pending;
  }
  const std::string of_message = message_id ? " AND +r.message_id = ?1" : "";
  auto covered = db_.prepare(
      fmt::format("SELECT 'delivered', count(*) FROM deliveries d JOIN recipient_rows r "
                  "ON r.id BETWEEN d.lo AND d.hi WHERE +r.state = 'pending'{0}"
                  " UNION ALL SELECT 'in_flight', count(*) FROM leases l JOIN recipient_rows r "
                  "ON r.id BETWEEN l.lo AND l.hi WHERE {1}{0}",
                  of_message, kLeasedPendingRow));
  if (!covered) return fail(covered);
  if (message_id) covered->bind(1, *message_id);
  int64_t pending = by_word["pending"];  // less those delivered or in flight: queued
  while (true) {
    auto row = covered->step();
    if (!row) return fail(row);
    if (!*row) break;
    by_word[covered->column_string(0)] += covered->column_int(1);
    pending -= covered->column_int(1);
  }
  by_word["queued"] += pending;
  std::vector<std::pair<RecipientState, uint64_t>> out;  // the states with any recipient
  for (RecipientState state : kAllStates)
    if (const int64_t n = by_word[std::string(to_string(state))]; n > 0)
      out.emplace_back(state, static_cast<uint64_t>(n));
  return out;
}

}  // namespace ringmail::storage

#include "app/summary.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "app/human_format.h"

namespace ringmail::app {
namespace {

constexpr size_t kTopReplyCodes = 5;

double per_second(uint64_t n, double seconds) {
  return seconds > 0 ? static_cast<double>(n) / seconds : 0;
}

std::string rate(uint64_t n, double seconds) {
  return group_thousands(static_cast<uint64_t>(std::llround(per_second(n, seconds))));
}

// Recipients the engine took but never reported on (only when a run ends abnormally) are
// counted with the ones it reports as not attempted.
uint64_t not_attempted(const RunResult& r) {
  const uint64_t finished = r.delivery.recipients_accounted();
  return r.delivery.recipients_not_attempted + (r.taken > finished ? r.taken - finished : 0) +
         r.unread;
}

// (code, recipients) with recipients > 0, most frequent first, then by code.
std::vector<std::pair<int, uint64_t>> reply_codes_by_count(const engine::DeliverySnapshot& d) {
  std::vector<std::pair<int, uint64_t>> codes;
  for (size_t code = 0; code < d.recipients_by_reply_code.size(); ++code) {
    if (d.recipients_by_reply_code[code] > 0) {
      codes.emplace_back(static_cast<int>(code), d.recipients_by_reply_code[code]);
    }
  }
  std::ranges::stable_sort(codes, [](const auto& a, const auto& b) { return a.second > b.second; });
  return codes;
}

}  // namespace

std::string format_summary_text(const RunResult& r) {
  const auto& d = r.delivery;
  std::string out;
  out += fmt::format("ringmail: {} after {:.2f}s\n",
                     r.interrupted ? "interrupted, drained" : "finished", r.elapsed_s);
  out += fmt::format("  delivered      {:>12}\n", group_thousands(d.recipients_delivered));
  out += fmt::format("  deferred       {:>12}\n", group_thousands(d.recipients_deferred));
  out += fmt::format("  bounced        {:>12}\n", group_thousands(d.recipients_bounced));
  out += fmt::format("  rejected       {:>12}  (lines of the recipients file refused)\n",
                     group_thousands(r.rejected));
  out += fmt::format("  not attempted  {:>12}\n", group_thousands(not_attempted(r)));
  if (d.recipients_parked > 0)
    out += fmt::format("  parked         {:>12}  (their destination had a backlog; taken again later)\n",
                       group_thousands(d.recipients_parked));
  if (!r.source_exhausted) out += "  (the rest of the recipients file was not read)\n";
  out +=
      fmt::format("  messages       {:>12}  {} msg/s\n", group_thousands(d.transactions_finished),
                  rate(d.transactions_finished, r.elapsed_s));
  out +=
      fmt::format("  recipients     {:>12}  {} rcpt/s\n", group_thousands(d.recipients_attempted()),
                  rate(d.recipients_attempted(), r.elapsed_s));
  out += fmt::format("  connections    {:>12}  attempted, {} failed\n",
                     group_thousands(d.connections_opened), group_thousands(d.connection_failures));
  auto codes = reply_codes_by_count(d);
  if (!codes.empty()) {
    out += "  reply codes    ";
    for (size_t i = 0; i < codes.size() && i < kTopReplyCodes; ++i) {
      const auto& [code, n] = codes[i];
      if (i > 0) out += ", ";
      // Code 0 marks outcomes decided locally: connection lost, timeout, protocol error.
      // It is the key "0" in JSON, so the text shows the 0 too.
      out += fmt::format("{}: {}", code == 0 ? "0 (local)" : std::to_string(code),
                         group_thousands(n));
    }
    if (codes.size() > kTopReplyCodes) {
      out += fmt::format(" (+{} more)", codes.size() - kTopReplyCodes);
    }
    out += '\n';
  }
  return out;
}

std::string format_summary_json(const RunResult& r) {
  const auto& d = r.delivery;
  nlohmann::json codes = nlohmann::json::object();
  for (const auto& [code, n] : reply_codes_by_count(d)) codes[std::to_string(code)] = n;
  nlohmann::json j = {
      {"delivered", d.recipients_delivered},
      {"deferred", d.recipients_deferred},
      {"bounced", d.recipients_bounced},
      {"rejected", r.rejected},
      {"not_attempted", not_attempted(r)},
      {"parked", d.recipients_parked},
      {"messages", d.transactions_finished},
      {"recipients", d.recipients_attempted()},
      {"elapsed_s", r.elapsed_s},
      {"messages_per_s", per_second(d.transactions_finished, r.elapsed_s)},
      {"recipients_per_s", per_second(d.recipients_attempted(), r.elapsed_s)},
      {"connections_opened", d.connections_opened},
      {"connection_failures", d.connection_failures},
      {"reply_codes", std::move(codes)},
      {"interrupted", r.interrupted},
  };
  return j.dump();
}

int exit_status(const RunResult& r) {
  const auto& d = r.delivery;
  const bool all_delivered = r.source_exhausted && r.rejected == 0 &&
                             d.recipients_delivered == r.taken && d.recipients_deferred == 0 &&
                             d.recipients_bounced == 0 && not_attempted(r) == 0;
  return all_delivered ? 0 : 1;
}

}  // namespace ringmail::app

#include "app/campaign_enqueue.h"

#include <fmt/format.h>

#include "app/human_format.h"
#include "app/queue_runner.h"

namespace ringmail::app {

std::expected<EnqueuedCampaign, std::string> enqueue_campaign(
    const storage::StorageOptions& options, const storage::EnqueueRequest& request,
    RecipientsFile& recipients, Console& console, const std::function<bool()>& stop_requested) {
  auto failed = [](const storage::StorageError& e, std::string_view tail = {}) {
    return std::unexpected(e.message + storage_error_hint(e) + std::string(tail));
  };
  // Before the database is opened, so an empty file leaves no database behind.
  if (recipients.has_no_records())
    return std::unexpected(fmt::format("no recipients in {}", recipients.path()));
  recipients.report_duplicates(true);
  auto store = storage::QueueStore::open(options, storage::OpenMode::kReadWriteCreate);
  if (!store) return std::unexpected(store.error().message + storage_error_hint(store.error()));
  const int64_t now = storage::unix_now_ms();
  auto counts = store->begin_enqueue(request, now);
  if (!counts) return failed(counts.error());
  EnqueuedCampaign out{*counts, 0};
  if (out.counts.duplicate) {
    store->abort_enqueue();
    return out;
  }
  const int64_t due = request.send_at_ms ? request.send_at_ms : now;
  constexpr uint64_t kMaxReported = 20;
  constexpr uint64_t kStopCheckEvery = 4096;  // records; a check is one sigtimedwait call
  uint64_t records = 0;
  while (auto record = recipients.next()) {
    if (stop_requested && ++records % kStopCheckEvery == 0 && stop_requested()) {
      store->abort_enqueue();
      out.interrupted = true;
      return out;
    }
    if (!record->has_value()) {
      // A duplicate is enqueued once and does not make the enqueue partial.
      uint64_t& count = record->error().duplicate() ? out.duplicate_lines : out.rejected_lines;
      if (++count <= kMaxReported) console.print_line(record->error().to_string());
      continue;
    }
    const Recipient& r = **record;
    if (auto ok = store->add_recipient(out.counts, r.address, r.domain, due, now); !ok) {
      store->abort_enqueue();
      return failed(ok.error(), "; nothing was enqueued");
    }
  }
  if (out.rejected_lines > kMaxReported)
    console.print_line(fmt::format("{}: ... {} more refused lines", recipients.path(),
                                   group_thousands(out.rejected_lines - kMaxReported)));
  if (out.duplicate_lines > 0)
    console.print_line(fmt::format("{}: {} duplicates skipped", recipients.path(),
                                   group_thousands(out.duplicate_lines)));
  if (stop_requested && stop_requested()) {
    store->abort_enqueue();
    out.interrupted = true;
    return out;
  }
  if (out.counts.queued + out.counts.suppressed == 0) {
    // Committing a message with no recipient would use up its idempotency key, so the
    // corrected file would then add nothing.
    store->abort_enqueue();
    return std::unexpected(
        out.rejected_lines == 0
            ? fmt::format("no recipients in {}", recipients.path())
            : fmt::format("{}: no recipient accepted ({} refused lines); nothing was enqueued",
                          recipients.path(), group_thousands(out.rejected_lines)));
  }
  if (auto ok = store->finish_enqueue(); !ok) return failed(ok.error(), "; nothing was enqueued");
  return out;
}

}  // namespace ringmail::app

// One message and the recipients of a file into the database as one transaction: when it
// returns a value, every accepted recipient is committed; when it fails, nothing is.
// Shared by `ringmail enqueue` and the durable `ringmail send`.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <string>

#include "app/console.h"
#include "app/recipients_file.h"
#include "storage/queue_store.h"

namespace ringmail::app {

struct EnqueuedCampaign {
  storage::EnqueueCounts counts;  // counts.duplicate: the idempotency key was used, nothing added
  uint64_t rejected_lines = 0;    // refused lines of the file (the first few printed)
  uint64_t duplicate_lines = 0;   // addresses seen before in the file: skipped, not refused
  bool interrupted = false;       // stop_requested said so: rolled back, nothing added
};

// Opens (creating) the database at `options.path`, adds the message and every valid
// record of `recipients`, due at `request.send_at_ms`. Refused lines are printed on
// `console` (the first 20, then a count), and so are duplicate addresses (the first 20,
// then "FILE: N duplicates skipped"). A file without any record is an error ("no
// recipients in FILE") found before the database is opened. `stop_requested` (when set)
// is asked every few thousand records; true rolls the whole campaign back. The error is
// one line for stderr.
std::expected<EnqueuedCampaign, std::string> enqueue_campaign(
    const storage::StorageOptions& options, const storage::EnqueueRequest& request,
    RecipientsFile& recipients, Console& console,
    const std::function<bool()>& stop_requested = {});

}  // namespace ringmail::app

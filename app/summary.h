// The end of a run: what happened to every recipient, for people (text) or programs (one
// JSON object), and the exit status it earns.
#pragma once

#include <cstdint>
#include <string>

#include "engine/delivery_counters.h"

namespace ringmail::app {

struct RunResult {
  engine::DeliverySnapshot delivery;
  uint64_t rejected = 0;          // refused lines of the recipients file
  uint64_t taken = 0;             // recipients handed to the engine
  bool source_exhausted = false;  // the whole file was read
  bool interrupted = false;       // a signal asked for a drain
  uint64_t unread = 0;            // recipients left in the file after a drain (not attempted)
  double elapsed_s = 0;
};

// Several lines, each ending in '\n'.
std::string format_summary_text(const RunResult& result);

// One JSON object on one line (no trailing newline) with the keys delivered, deferred,
// bounced, rejected, not_attempted, messages, recipients, elapsed_s, messages_per_s,
// recipients_per_s, connections_opened, connection_failures, reply_codes ({"250": n, ...}),
// interrupted. `recipients` counts those the engine finished; `not_attempted` also counts
// recipients taken but never finished, and those a drain left unread in the file.
std::string format_summary_json(const RunResult& result);

// 0 when the whole file was read and every recipient in it delivered (none refused);
// 1 otherwise.
int exit_status(const RunResult& result);

}  // namespace ringmail::app

// Delivering what the database holds: recover dead runs' leases, then engine passes over
// the due recipients until nothing is due now (or, as a service, until a signal), and a
// summary of it. Shared by `ringmail run` and the durable `ringmail send`.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "app/cli.h"
#include "app/config.h"
#include "app/engine_driver.h"
#include "app/observability.h"
#include "app/summary.h"
#include "engine/seams.h"
#include "storage/recipient_state.h"
#include "storage/storage_error.h"
#include "storage/storage_thread.h"

namespace ringmail::app {

struct QueueRunOptions {
  bool until_done = false;  // false: the service, sleeping until work is due
  bool quiet = false;       // no progress and no notices
  // `send`: the recipients just enqueued, for the progress bar's total (0: unknown).
  uint64_t expected_recipients = 0;
  // `send`: refused lines of the recipients file, shown as progress and in the summary.
  uint64_t rejected_lines = 0;
  SummaryFormat summary = SummaryFormat::kText;
  // After the summary, keep serving /metrics for `metrics.linger` (a signal ends it).
  bool linger = false;
  // `send`: deliver only this message's recipients (not other campaigns' work in the same
  // database, which may be meant for another relay), and report only their states.
  std::optional<int64_t> only_message;
};

struct QueueRunReport {
  RunResult result;  // what the engine did in this run, over all passes
  uint64_t passes = 0;
  uint64_t recovered = 0;  // in flight in a dead run, queued again at the start
  storage::StorageStats stats;
  // Where every recipient of the database (or of `only_message`) stands at the end
  // (empty if unreadable).
  std::vector<std::pair<storage::RecipientState, uint64_t>> states;
  // The database failed mid-run: no more work was taken (exit 3).
  std::optional<storage::StorageError> storage_error;
  // An engine shard failed (its io_uring): the pass was drained and no other pass started,
  // since the same failure would end it again (exit 3). Nothing is lost: the recipients
  // not attempted are queued again.
  std::optional<std::string> engine_failure;
};

// Runs the engine over `config.storage.path` (which must exist) until done, then prints
// the summary (JSON on stdout, or text on stdout unless quiet; with JSON the text also goes
// to stderr unless quiet). Errors that stop it before anything is sent (the database
// cannot be opened, the metrics address is taken...) are one line for stderr; a database
// failure during the run is printed and reported in the result, after the engine drained.
// `observability` was started by the caller (before anything irrevocable, so a taken
// metrics address stops the command first); this stops its exporter before returning.
std::expected<QueueRunReport, std::string> deliver_queue(const Config& config,
                                                         engine::RouteResolver& resolver,
                                                         StopSignals& signals,
                                                         Observability& observability,
                                                         const QueueRunOptions& options);

// " (the disk ... is full; ...)": what the operator can do about `error`, or "".
std::string storage_error_hint(const storage::StorageError& error);

}  // namespace ringmail::app

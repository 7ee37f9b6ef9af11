// The durable commands: `ringmail enqueue`, `run`, `status`, `suppress` and `purge`, over the
// SQLite queue of storage/.
#pragma once

#include "app/cli.h"

namespace ringmail::app {

// 0: every accepted recipient is committed (refused lines are reported); 2: usage, input
// or database error (nothing was enqueued).
int run_enqueue(const EnqueueFlags& flags);
// 0: nothing is due now (every recipient final or waiting for a later attempt); 1:
// interrupted by SIGINT/SIGTERM; 2: usage/config/start-up error; 3: the database failed
// during the run (nothing accepted is lost: in-flight recipients are recovered by the
// next run).
int run_run(const RunFlags& flags);
int run_status(const StatusFlags& flags);
int run_suppress(const SuppressFlags& flags);
// 0: purged (or counted, --dry-run); 2: usage, config or database error.
int run_purge(const PurgeFlags& flags);

}  // namespace ringmail::app

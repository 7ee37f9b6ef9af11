// Settings of storage/: durability, commit grouping, claims and leases, and the retry
// schedule. The [storage] and [retry] tables of the config file map onto these.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace ringmail::storage {

using Seconds = std::chrono::duration<double>;

// PRAGMA synchronous in WAL mode. kNormal: a commit survives a crash of the process
// (kill -9) but the last commits before a power loss or kernel crash may be lost (the
// database stays consistent). kFull: a commit also survives power loss, at one fsync per
// grouped commit.
enum class Synchronous { kNormal, kFull };
const char* to_string(Synchronous s);  // "normal" / "full"

struct RetrySchedule {
  Seconds first_delay{60};  // after the first deferral
  double factor = 2;        // each further deferral waits this much longer
  Seconds max_delay{3600};  // the wait never exceeds this
  double jitter = 0.2;      // up to this fraction is taken off each wait, at random
  Seconds max_age{5 * 24 * 3600};  // a recipient still deferred this long after it was
                                   // first due expires (Postfix's maximal_queue_lifetime)
};

struct StorageOptions {
  std::string path = "ringmail.db";
  Synchronous synchronous = Synchronous::kNormal;
  Seconds commit_interval{0.01};  // outcomes wait at most this long for their commit
  size_t commit_batch = 2000;     // ... or until this many are waiting
  size_t claim_batch = 1000;      // recipients claimed per database round trip
  Seconds lease_duration{3600};   // an in-flight lease older than this is reclaimed
  Seconds idle_poll{1};           // `run` without --until-done looks for new work this often
  // Senders and bodies kept for claims to come (least recently claimed dropped first).
  size_t message_cache_bytes = size_t{64} << 20;
  // `run` as a service purges, as `ringmail purge --older-than` would, the recipients in a
  // final state last changed longer ago than `retention`, so a database that serves for
  // months stays the size of its recent work. 0: kept for ever. A pass starts a minute
  // after the service does and then every `retention_check`; it removes
  // `retention_batch` ids per step, at most one step a second, between commits.
  Seconds retention{30.0 * 24 * 3600};
  Seconds retention_check{3600};
  size_t retention_batch = 5000;
};

}  // namespace ringmail::storage

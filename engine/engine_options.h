// Tunables of the sending engine, with production defaults. RFC 5321 §4.5.3.2 gives the
// SMTP timeouts; pool limits follow Postfix's defaults where they exist.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dns/mx_resolver.h"
#include "engine/site_counters.h"
#include "engine/tls_context.h"
#include "smtp/client_session.h"

namespace ringmail::engine {

using Seconds = std::chrono::duration<double>;

struct Timeouts {
  Seconds connect{30};
  Seconds greeting{300};    // RFC 5321: initial 220 message, 5 minutes
  Seconds command{300};     // EHLO/MAIL/RCPT/RSET/QUIT: 5 minutes
  Seconds data_start{120};  // DATA initiation: 2 minutes
  Seconds data_block{180};  // each block of the body written: 3 minutes
  Seconds data_end{600};    // DATA termination: 10 minutes
  // The 221 to QUIT once every transaction has its outcome: nothing is at stake any more,
  // so a server slow to say goodbye holds the connection this long at most.
  Seconds quit{5};
};

struct PoolLimits {
  unsigned max_connections = 20;  // per destination (per shard owning it)
  unsigned max_messages_per_connection = 10000;  // then QUIT and open a fresh one
  unsigned max_recipients_per_transaction = 100;
  Seconds idle_timeout{5};          // an idle pooled connection is closed after this
  double messages_per_second = 0;   // 0: unlimited
  // How long a dead destination (every host set aside) is paused before one probe
  // connection; its queued recipients in the database wait as long (storage/README.md).
  Seconds dead_destination_pause{60};
  // 0: off. Otherwise, once the oldest transaction queued for the destination has waited
  // this long (a slow server), new transactions for it are parked: given back not
  // attempted, to be offered again after this long, so a slow destination cannot fill
  // the shard's capacity and set the pace for every other. Only a source that can keep
  // parked work (the database) turns this on.
  Seconds max_backlog{0};
};

// How connections to the relay are protected and authenticated (RFC 3207, 8314, 4954).
struct TransportSecurity {
  // kOpportunistic by default: STARTTLS when offered, plaintext otherwise, and an
  // unverifiable certificate does not block delivery (as Postfix's "may").
  TlsPolicy tls;
  bool implicit_tls = false;  // TLS from the first byte (port 465), no STARTTLS
  std::optional<smtp::AuthCredentials> auth;  // never logged
};

// Delivery by MX (RFC 5321 §5): used for destinations that name a domain.
struct MxRouting {
  dns::ResolverOptions resolver;  // DNS servers, families, timeouts, caching
};

// Per-site counters (DeliverySnapshot::sites): which sites are counted by name.
struct SiteMetrics {
  // Counted by name on every shard whatever else is seen ([metrics] sites): MX domains
  // (any case) or relay names (a route's TLS name, else its address).
  std::vector<std::string> sites;
  // Other sites each shard counts by name, first come, first served; later ones are
  // counted as "other". Bounds memory and label values with 100,000 domains.
  size_t max_tracked_per_shard = SiteCounters::kDefaultCapacity;
};

struct EngineOptions {
  unsigned shards = 0;  // 0: one per core
  std::string helo_name = "localhost";
  bool pipelining = true;  // use RFC 2920 when the server advertises it
  // Multishot receives over a provided-buffer ring when the kernel has them (5.19+);
  // false forces the fallback (one receive at a time into a per-connection buffer), the
  // path older kernels take, so tests can cover it here.
  bool multishot_receive = true;
  Timeouts timeouts;
  PoolLimits pool;
  TransportSecurity security;  // the default: the relay and every domain by MX
  // Profiles of [routes] entries with security of their own (a TLS policy, implicit TLS,
  // credentials): Destination::security_profile n > 0 is route_security[n - 1].
  std::vector<TransportSecurity> route_security;
  MxRouting mx;
  Seconds drain_timeout{30};  // after SIGTERM, how long transactions in flight may finish
  // Transactions waiting in one shard's inbox before the feeder blocks (bounds memory).
  size_t shard_inbox_capacity = 4096;
  // Most connections one shard has at once, over all its destinations (Postfix's process
  // limit, PowerMTA's max-smtp-out): beyond it a pool waits for a connection to close,
  // and an idle pooled connection of another destination is closed to make room. 0:
  // from the open-file limit, (RLIMIT_NOFILE - 256) / shards, so a burst of thousands of
  // domains cannot run the process out of file descriptors (EMFILE would defer work).
  size_t max_connections_per_shard = 0;
  // Times a transaction nothing of which reached a server is retried on another connection.
  unsigned max_not_attempted_retries = 3;
  // Tests only: a shard acts as if its ring failed (-EIO) once this many submission
  // entries have gone to the kernel, so the failure path can be tested. 0: never.
  uint64_t fail_ring_after_submissions = 0;
  // A destination pool unused for one to two of these is forgotten (Shard::sweep_idle_pools),
  // so a long-running service does not keep a pool for every destination it ever saw.
  // Not in the config file; tests shorten it.
  Seconds idle_pool_sweep{30};
  SiteMetrics site_metrics;
};

}  // namespace ringmail::engine

// One shard: one thread, one io_uring ring, and the destinations hashed to it with their
// pools and connections. Nothing here is shared with other shards; the only meeting point
// with other threads is the ShardInbox.
#pragma once

#include <array>
#include <chrono>
#include <expected>
#include <functional>
#include <deque>
#include <memory>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dns/mx_resolver.h"
#include "engine/completion_token.h"
#include "engine/connection.h"
#include "engine/delivery_counters.h"
#include "engine/destination_pool.h"
#include "engine/engine_options.h"
#include "engine/ring.h"
#include "engine/seams.h"
#include "engine/shard_inbox.h"

namespace ringmail::engine {

class Shard final : public dns::SocketWatcher {
 public:
  // Called on the shard's thread when its ring fails, before the shard answers the rest of
  // its inbox without the ring: the engine then stops the whole run (Engine::failure()).
  using RingFailureHandler = std::function<void(const std::string& what)>;

  // `inbox`, `sink` (may be null) and `counters` must outlive the shard.
  Shard(unsigned index, const EngineOptions& options, ShardInbox& inbox, OutcomeSink* sink,
        DeliveryCounters& counters, RingFailureHandler on_ring_failure = {});
  ~Shard();

  // The thread body: returns when the inbox is closed and all its work has finished, or
  // after a drain.
  void run();

  // dns::SocketWatcher: the resolver's sockets are polled on this shard's ring.
  void watch(int fd, bool readable, bool writable) override;

 private:
  // ---- Loop
  void arm_inbox_read();
  void take_inbox();
  void handle_completion(const io_uring_cqe& cqe);
  void schedule_active_pools();
  // A rate-limited pool with work and no token yet: wake it when the token is due.
  void wait_for_token(DestinationPool& pool);
  void flush_sends();
  void check_deadlines();
  bool finished() const;
  void quiesce();
  void begin_drain();
  // Work held and never attempted (pool queues, transactions waiting for a route) gets
  // its not-attempted outcome now, with stop_reply(): at a drain and when the ring fails.
  void give_back_unsent();
  // The ring failed (`error` a negative errno): every transaction held gets an outcome,
  // then the inbox is answered without the ring until the feeder closes it.
  void fail_ring(int error);
  void answer_inbox_without_ring();
  smtp::Reply stop_reply() const;
  __kernel_timespec next_wait() const;

  // ---- Pools
  DestinationPool& pool_for(const Destination& destination, const std::string& key);
  void activate(DestinationPool& pool);
  // Forgets pools idle since the last sweep (called every EngineOptions::idle_pool_sweep).
  void sweep_idle_pools();
  // At the shard's connection limit: the pool waits for a slot, and one idle connection of
  // another pool is asked to QUIT to make one (else a busy pool gives one back,
  // ask_for_connection_back). True when the pool may open a connection.
  bool connection_slot_for(DestinationPool& pool);
  // A connection slot came free: the first waiting pool gets it, held for it until its
  // turn (so a pool scheduled before it cannot take it).
  void wake_slot_waiter();
  // A woken pool that did not use its held slot (rate limited, no work left) gives it back.
  void return_reserved_slot(DestinationPool& pool);
  // Fair sharing of the cap: `waiter` waits for a slot and no idle connection can make
  // room, so the pool holding the most connections (more than one, and more than the
  // waiter would hold with one more) has one of them QUIT once the transactions it holds
  // are done; the waiter moves to the front of the waiters, so that slot is its own.
  // Asked only while fewer connections are on their way out than pools wait, once per
  // waiter until it gets a slot, and never for a waiter that is failing or, not proven
  // yet, still has a connection on its way (a server that never greets would hold the
  // slot for minutes). Runs only when a pool waits.
  void ask_for_connection_back(DestinationPool& waiter);
  // Connections of the pool connecting or open and not asked to QUIT: what it will keep.
  size_t connections_kept(const DestinationPool& pool) const;
  // The connection says QUIT once the transactions it holds are done, and takes no more.
  void ask_to_quit(uint32_t slot);
  void schedule_pool(DestinationPool& pool);
  void feed_connection(uint32_t slot);
  void defer_queue_of_dead_pool(DestinationPool& pool);
  // The outcome sink hears of a pool's state per transition (on_destination_state), never
  // per recipient: paused once its hosts are all set aside (again after a failed probe),
  // each recipient domain once per pause as its first transaction is given back, and up
  // at the first connection that reaches EHLO's reply (once per pool, then after a pause).
  void report_if_paused(DestinationPool& pool);
  void report_paused_domain(DestinationPool& pool, const smtp::Transaction& transaction);
  void report_up(DestinationPool& pool);
  void report_destination(DestinationPool& pool, bool paused, std::vector<std::string> domains);

  // ---- Connections
  void open_connection(DestinationPool& pool);
  void arm_receive(uint32_t slot);
  void submit_send(uint32_t slot);
  void mark_dirty(uint32_t slot);
  void after_session_event(uint32_t slot);
  void collect_outcomes(Connection& connection);
  // `failure`: the reason counted if the connection never reached ready (a TLS
  // handshake under way makes it ConnectionFailure::kTls).
  void fail_connection(uint32_t slot, smtp::EnhancedCode code, const std::string& reason,
                       ConnectionFailure failure);
  void note_failure_if_never_ready(Connection& connection, const smtp::Reply& why,
                                   ConnectionFailure failure);
  void begin_close(uint32_t slot);
  void maybe_submit_close(uint32_t slot);
  void release(uint32_t slot);
  void set_deadline(Connection& connection);

  // ---- MX routing
  // A transaction for a domain: waits for the domain's route (at once when cached).
  void route_by_mx(ShardJob&& job);
  void on_route(const Destination& destination, const dns::Route& route);
  void publish_dns_totals();
  DestinationPool& pool_for_exchangers(const dns::Route& route, const Destination& destination);
  void arm_dns_poll(int fd);
  void on_dns_poll(const io_uring_cqe& cqe, const CompletionToken& token);
  // Ends a transaction without a connection: a null MX or NXDOMAIN bounce, a DNS failure.
  void finish_locally(smtp::Transaction&& transaction, smtp::RecipientStatus status,
                      const smtp::Reply& why, SiteSlot& site);
  // Where recipients of a domain that never reached a pool are counted by site.
  SiteSlot& site_without_pool(const Destination& destination);

  // ---- TLS
  void start_tls(uint32_t slot);
  // Bytes from the socket of a TLS connection: handshake, then decrypt to the session.
  void receive_tls(uint32_t slot, std::string_view ciphertext);
  void submit_tls_send(uint32_t slot);
  bool has_output(const Connection& connection) const;
  // The security profile of a pool's destination (its route's, or the default).
  const TransportSecurity& security_for(const DestinationPool& pool) const;
  TlsClientContext* tls_context_for(const DestinationPool& pool);
  smtp::SessionOptions session_options_for(const DestinationPool& pool) const;

  void on_connect(uint32_t slot, int result);
  void on_send(uint32_t slot, int result);
  void on_receive(uint32_t slot, const io_uring_cqe& cqe);

  // ---- Outcomes
  // A transaction put on a pool's queue for the first time is stamped with now_; its
  // outcome then counts the time since (DeliverySnapshot::transaction_duration).
  void stamp_queued(smtp::Transaction& transaction) const;
  void count_duration(const smtp::Transaction& transaction);
  // Onto the pool's queue, or parked when the pool has a backlog (PoolLimits::max_backlog).
  // The caller activates the pool.
  void queue_or_park(DestinationPool& pool, smtp::Transaction&& transaction);
  // Transactions of the pool on the shard: queued, and on its connections.
  size_t held_by(const DestinationPool& pool) const;
  // Given back unsent, to be offered again after DestinationPool::park_for(): not an
  // attempt, not a stop.
  void park(DestinationPool& pool, smtp::Transaction&& transaction);
  void finish_transaction(smtp::TransactionOutcome&& outcome, DestinationPool* pool);
  // `site`: where deferred recipients are counted by site (unless counted as not
  // attempted); null: under "other".
  void give_up_not_attempted(smtp::Transaction&& transaction, const smtp::Reply& why,
                             bool count_as_not_attempted, SiteSlot* site = nullptr);

  unsigned index_;
  const EngineOptions& options_;
  ShardInbox& inbox_;
  OutcomeSink* sink_;
  DeliveryCounters& counters_;
  RingFailureHandler on_ring_failure_;

  bool multishot_receive_ = true;
  uint64_t inbox_counter_ = 0;  // eventfd read target: the kernel writes it while armed
  bool inbox_armed_ = false;

  // One SSL_CTX per shard (none when TLS is disabled); engines of its connections point
  // into it, so it is declared before the connections (destroyed after them).
  // By security profile (index 0: the default); empty where a profile has TLS disabled.
  std::vector<std::optional<TlsClientContext>> tls_contexts_;
  // The default security towards MX exchangers: the configured one without the relay's
  // credentials and implicit TLS.
  TransportSecurity mx_security_;

  ConnectionTable connections_;
  std::unordered_map<std::string, std::unique_ptr<DestinationPool>> pools_;
  std::vector<DestinationPool*> active_pools_;
  // The shard's connection limit (EngineOptions::max_connections_per_shard, resolved) and
  // the pools waiting for a slot under it, first come first served.
  size_t connection_cap_ = 0;
  std::deque<DestinationPool*> slot_waits_;
  size_t reserved_slots_ = 0;  // slots held for woken waiters (DestinationPool::slot_reserved)
  std::vector<DestinationPool*> scheduling_;  // active_pools_ being worked through
  // Rate-limited pools whose queue waits for a token, by when it is due: each is woken
  // (activated) at that time, so a turn costs O(log pools) rather than a look at every
  // pool, which with thousands of domains and a rate limit was most of the shard's CPU.
  using TokenWait = std::pair<Clock::time_point, DestinationPool*>;
  std::priority_queue<TokenWait, std::vector<TokenWait>, std::greater<>> token_waits_;
  std::vector<uint32_t> dirty_;
  std::vector<ShardJob> incoming_;
  std::vector<smtp::TransactionOutcome> outcome_scratch_;
  std::unordered_map<uint64_t, unsigned> not_attempted_retries_;

  // MX routing (only when a destination names a domain; created on first use).
  struct DnsSocket {
    unsigned events = 0;       // POLLIN/POLLOUT wanted
    uint32_t generation = 0;   // of the poll armed for it
    bool armed = false;
  };
  std::unique_ptr<dns::MxResolver> resolver_;
  bool resolving_ = false;  // inside resolver_->resolve(): a callback now is a cache answer
  std::string resolver_error_;  // why it could not be created
  std::unordered_map<int, DnsSocket> dns_sockets_;
  uint32_t dns_generation_ = 0;
  uint64_t dns_joined_ = 0;  // transactions that joined a lookup waiting in mx_waiting_
  // Transactions waiting for their domain's route, by destination key.
  std::unordered_map<std::string, std::vector<smtp::Transaction>> mx_waiting_;

  Clock::time_point now_;
  Clock::time_point next_deadline_check_;
  Clock::time_point next_pool_sweep_;
  bool draining_ = false;
  Clock::time_point drain_deadline_{};
  std::string stop_reason_ = "shutting down before this was attempted";  // see stop_reply()
  uint64_t submitted_ = 0;  // submission entries the kernel took (fail_ring_after_submissions)
  bool inbox_exhausted_ = false;  // closed and everything taken

  // Declared last so they are destroyed first: no request of the ring may outlive the
  // memory it reads or writes (connections' iovecs, receive buffers, inbox_counter_).
  Ring ring_;
  std::unique_ptr<ReceiveBufferRing> receive_buffers_;
};

}  // namespace ringmail::engine

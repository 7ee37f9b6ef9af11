// Counters of what the engine did, summed over shards for the progress bar and summary.
// Each shard writes its own copy (relaxed atomics, one writer); readers sum snapshots.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace ringmail::engine {

struct DeliverySnapshot {
  uint64_t recipients_delivered = 0;
  uint64_t recipients_deferred = 0;
  uint64_t recipients_bounced = 0;
  uint64_t recipients_not_attempted = 0;  // dropped at shutdown before any attempt
  uint64_t transactions_finished = 0;     // messages: one per SMTP transaction
  uint64_t transactions_delivered = 0;    // ... of which at least one recipient delivered
  uint64_t connections_opened = 0;
  uint64_t connection_failures = 0;
  std::array<uint64_t, 600> recipients_by_reply_code{};  // index: reply code deciding it (0: local)

  uint64_t recipients_finished() const {
    return recipients_delivered + recipients_deferred + recipients_bounced + recipients_not_attempted;
  }
  void add(const DeliverySnapshot& other);
};

class DeliveryCounters {
 public:
  // Writer side: only the owning shard thread calls these.
  void count_recipient(int reply_code, int status /*smtp::RecipientStatus*/);
  void count_not_attempted(uint64_t recipients);
  void count_transaction(bool any_delivered);
  void count_connection_opened();
  void count_connection_failure();
  // Reader side: any thread.
  DeliverySnapshot snapshot() const;

 private:
  static void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::atomic<uint64_t> delivered_{0}, deferred_{0}, bounced_{0}, not_attempted_{0};
  std::atomic<uint64_t> transactions_{0}, transactions_delivered_{0};
  std::atomic<uint64_t> opened_{0}, failures_{0};
  std::array<std::atomic<uint64_t>, 600> by_code_{};
};

}  // namespace ringmail::engine

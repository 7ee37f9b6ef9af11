// Recipients and failed connections per destination site on one shard, with a bounded
// number of names: the configured sites plus the first `capacity` others seen are counted
// by name, every later site under "other" from the start.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "smtp/transaction.h"

namespace ringmail::engine {

// What one site did (plain numbers, summed over shards and engines).
struct SiteCounts {
  std::array<uint64_t, 3> recipients{};  // by smtp::RecipientStatus: delivered, deferred, bounced
  uint64_t connection_failures = 0;

  uint64_t recipients_total() const { return recipients[0] + recipients[1] + recipients[2]; }
  void add(const SiteCounts& other);
};

struct SiteSample {
  std::string name;  // lower case
  SiteCounts counts;
};

// One site's counters. Its address never changes while the SiteCounters lives, so a pool
// resolves its slot once and counts through the pointer (no lookup per recipient).
class SiteSlot {
 public:
  // Writer side: only the owning shard thread.
  void count_recipients(smtp::RecipientStatus status, uint64_t n) {
    bump(recipients_[size_t(status) < recipients_.size() ? size_t(status) : 1], n);
  }
  void count_connection_failure() { bump(connection_failures_, 1); }
  // Reader side: any thread.
  SiteCounts read() const;
  // Set before the slot is published, never changed after; empty for "other".
  const std::string& name() const { return name_; }

 private:
  friend class SiteCounters;
  static void bump(std::atomic<uint64_t>& c, uint64_t n) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::string name_;
  std::array<std::atomic<uint64_t>, 3> recipients_{};
  std::atomic<uint64_t> connection_failures_{0};
};

class SiteCounters {
 public:
  // Sites tracked by name on one shard besides the configured ones: the first this many
  // seen. Memory for them is taken at configure() (about 100 bytes a slot).
  static constexpr size_t kDefaultCapacity = 256;

  // Writer side, once, before the first slot_for(): `configured` sites (any case) always
  // have a slot of their own, and up to `capacity` others get one first come, first
  // served. Without it, slot_for() configures kDefaultCapacity and no named sites.
  void configure(std::span<const std::string> configured, size_t capacity = kDefaultCapacity);

  // Writer side. The slot counting `site` (compared without case), made on first use;
  // other() once the capacity is used up. A hash lookup: call it when a pool is made.
  SiteSlot& slot_for(std::string_view site);
  // The slot of `site` if it already has one (configured or made by slot_for()), else
  // other(): for work that never reaches a pool (a DNS failure), so that such names do
  // not use up the capacity.
  SiteSlot& existing_slot_or_other(std::string_view site);
  SiteSlot& other() { return other_; }
  bool is_configured(std::string_view site) const;

  // Reader side (any thread): every named site (sorted by name) and the "other" slot.
  void read(std::vector<SiteSample>& named, SiteCounts& other) const;

 private:
  std::unique_ptr<SiteSlot[]> slots_;
  size_t slot_count_ = 0;  // configured + capacity
  size_t configured_count_ = 0;
  // Slots [0, published_) have their name set; the writer stores it with release order
  // after writing a name, a reader loads it with acquire order and reads no further.
  std::atomic<size_t> published_{0};
  bool configured_ = false;                             // writer only
  std::unordered_map<std::string, SiteSlot*> by_name_;  // writer only
  SiteSlot other_;
};

}  // namespace ringmail::engine

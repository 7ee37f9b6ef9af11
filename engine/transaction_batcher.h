// Groups recipients into SMTP transactions: recipients with the same sender, the same
// content (the same EncodedBody) and the same destination share one transaction, up to
// the recipient limit. Personalised content therefore gets one transaction per message.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>

#include "engine/seams.h"
#include "engine/shard_inbox.h"

namespace ringmail::engine {

class TransactionBatcher {
 public:
  using Emit = std::function<void(ShardJob&&)>;

  // `emit` receives every completed transaction. Open (partial) transactions are bounded
  // by `max_open` (a few hundred bytes each); past it all are flushed. Large enough that a
  // list interleaving tens of thousands of domains still groups each domain's recipients.
  TransactionBatcher(unsigned max_recipients, Emit emit, size_t max_open = 65536);

  // `destination_key` is destination.key(), passed in so it is built once per
  // destination rather than once per recipient.
  void add(DeliveryItem&& item, const Destination& destination, const std::string& destination_key);
  // Emits every partial transaction (at the end of the source, or to cut latency).
  void flush();

 private:
  struct Key {
    std::string destination_key;
    std::string sender;
    const std::string* body;
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };

  unsigned max_recipients_;
  Emit emit_;
  size_t max_open_;
  uint64_t next_id_ = 1;
  std::unordered_map<Key, ShardJob, KeyHash> open_;
};

}  // namespace ringmail::engine

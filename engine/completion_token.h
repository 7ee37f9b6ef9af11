// What a completion belongs to, packed into io_uring's 64-bit user_data: the operation,
// the connection slot and the slot's generation. A completion whose generation no longer
// matches its slot belongs to a connection that is gone, and is dropped.
#pragma once

#include <cstdint>

namespace ringmail::engine {

enum class OpKind : uint8_t {
  kConnect = 1,
  kSend = 2,
  kRecv = 3,
  kCancel = 4,
  kClose = 5,
  kInboxWake = 6,  // the shard's inbox eventfd; slot and generation unused
  kDnsPoll = 7,    // readiness of a c-ares socket; slot = fd, generation = its watch
};

struct CompletionToken {
  OpKind op;
  uint32_t slot;
  uint32_t generation;  // only the low 24 bits are kept

  static constexpr uint32_t kGenerationMask = 0xFFFFFF;

  uint64_t encode() const {
    return (uint64_t(op) << 56) | (uint64_t(generation & kGenerationMask) << 32) | slot;
  }
  static CompletionToken decode(uint64_t user_data) {
    return {OpKind(user_data >> 56), uint32_t(user_data),
            uint32_t(user_data >> 32) & kGenerationMask};
  }
};

}  // namespace ringmail::engine

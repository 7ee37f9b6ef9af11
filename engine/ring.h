// One io_uring instance owned by one shard thread, and the provided-buffer ring its
// multishot receives draw from. Setting up falls back step by step on older kernels.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace ringmail::engine {

class Ring {
 public:
  // Throws std::system_error when no ring at all can be created (start-up only).
  explicit Ring(unsigned entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // A submission entry; when the submission queue is full, what is queued is submitted
  // first, so this never fails.
  io_uring_sqe* sqe();
  io_uring* raw() { return &ring_; }

 private:
  io_uring ring_{};
};

// Provided buffers for multishot receive (kernel ≥ 5.19): the kernel picks a buffer per
// completion, so idle connections hold no receive memory. When the kernel refuses,
// available() is false and the shard receives into per-connection buffers instead.
class ReceiveBufferRing {
 public:
  static constexpr uint16_t kGroupId = 1;

  ReceiveBufferRing(Ring& ring, unsigned buffer_count, size_t buffer_size);
  ~ReceiveBufferRing();
  ReceiveBufferRing(const ReceiveBufferRing&) = delete;
  ReceiveBufferRing& operator=(const ReceiveBufferRing&) = delete;

  bool available() const { return ring_memory_ != nullptr; }
  // The bytes of buffer `id` that a completion filled.
  std::span<const char> buffer(uint16_t id, size_t length) const {
    return {buffers_ + size_t(id) * buffer_size_, length};
  }
  // Gives buffer `id` back to the kernel once its bytes have been consumed.
  void recycle(uint16_t id);

 private:
  Ring& ring_;
  io_uring_buf_ring* ring_memory_ = nullptr;
  char* buffers_ = nullptr;
  unsigned count_ = 0;
  size_t buffer_size_ = 0;
  size_t mapping_bytes_ = 0;
};

}  // namespace ringmail::engine

#include "engine/ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <system_error>

namespace ringmail::engine {

Ring::Ring(unsigned entries) {
  // SINGLE_ISSUER + DEFER_TASKRUN: only this thread submits, and completions are run when
  // it asks for them, not by interrupting it mid-batch (fewer context switches per message).
  // COOP_TASKRUN is the older kernel's weaker form. Each flag set is tried in turn.
  const unsigned flag_sets[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_COOP_TASKRUN,
      0,
  };
  int rc = -EINVAL;
  for (unsigned flags : flag_sets) {
    io_uring_params params{};
    params.flags = flags;
    rc = io_uring_queue_init_params(entries, &ring_, &params);
    if (rc == 0) return;
  }
  throw std::system_error(-rc, std::generic_category(), "io_uring_queue_init");
}

Ring::~Ring() { io_uring_queue_exit(&ring_); }

io_uring_sqe* Ring::sqe() {
  io_uring_sqe* entry = io_uring_get_sqe(&ring_);
  while (entry == nullptr) {
    io_uring_submit(&ring_);
    entry = io_uring_get_sqe(&ring_);
  }
  return entry;
}

ReceiveBufferRing::ReceiveBufferRing(Ring& ring, unsigned buffer_count, size_t buffer_size)
    : ring_(ring), count_(buffer_count), buffer_size_(buffer_size) {
  // One anonymous mapping holds the ring of descriptors (page aligned, as the kernel
  // requires) followed by the buffers themselves.
  const size_t ring_bytes = sizeof(io_uring_buf) * buffer_count;
  mapping_bytes_ = ring_bytes + buffer_size * buffer_count;
  void* mem = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
                   -1, 0);
  if (mem == MAP_FAILED) return;
  auto* br = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_ring_init(br);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(br);
  reg.ring_entries = buffer_count;
  reg.bgid = kGroupId;
  if (io_uring_register_buf_ring(ring_.raw(), &reg, 0) != 0) {
    munmap(mem, mapping_bytes_);
    return;
  }
  ring_memory_ = br;
  buffers_ = static_cast<char*>(mem) + ring_bytes;
  const int mask = io_uring_buf_ring_mask(buffer_count);
  for (unsigned i = 0; i < buffer_count; ++i)
    io_uring_buf_ring_add(br, buffers_ + i * buffer_size, buffer_size, i, mask, int(i));
  io_uring_buf_ring_advance(br, int(buffer_count));
}

ReceiveBufferRing::~ReceiveBufferRing() {
  if (ring_memory_ == nullptr) return;
  io_uring_unregister_buf_ring(ring_.raw(), kGroupId);
  munmap(ring_memory_, mapping_bytes_);
}

void ReceiveBufferRing::recycle(uint16_t id) {
  io_uring_buf_ring_add(ring_memory_, buffers_ + size_t(id) * buffer_size_, buffer_size_, id,
                        io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(ring_memory_, 1);
}

}  // namespace ringmail::engine

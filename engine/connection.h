// One SMTP connection on a shard: its socket, its protocol session and what it has in
// flight on the ring. Lives in a ConnectionTable slot; the slot (and so every buffer the
// kernel may still touch) is reused only after the connection's last completion.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "engine/tls_engine.h"
#include "smtp/client_session.h"

namespace ringmail::engine {

class DestinationPool;
using Clock = std::chrono::steady_clock;

struct Connection {
  enum class State : uint8_t { kFree, kConnecting, kOpen, kClosing };

  static constexpr size_t kMaxSendSegments = 16;
  static constexpr size_t kFallbackReceiveBytes = 16 * 1024;

  State state = State::kFree;
  uint32_t generation = 0;
  int fd = -1;
  DestinationPool* pool = nullptr;
  uint32_t host_index = 0;  // which of the pool's hosts this connection went to
  std::optional<smtp::ClientSession> session;

  // Operations submitted and not yet completed; the slot is released only at zero. A
  // multishot receive counts once, until its final completion (no IORING_CQE_F_MORE).
  uint8_t ops_in_flight = 0;
  bool send_in_flight = false;
  bool recv_armed = false;
  bool cancel_submitted = false;
  bool close_submitted = false;
  bool in_dirty_list = false;    // queued for a send at the end of this loop turn
  bool close_after_send = false; // the session is over; close once its last bytes are out
  bool quit_requested = false;
  bool reached_ready = false;    // greeting and EHLO succeeded at least once
  bool failure_noted = false;    // counted as a failed connection (never reached ready)
  uint64_t transactions_assigned = 0;
  Clock::time_point deadline{};
  Clock::time_point idle_since{};  // when it last went idle (set_deadline), for kIdleGrace

  // Read by the kernel while send_in_flight: owned here so they outlive the submission.
  std::array<iovec, kMaxSendSegments> send_iov{};
  msghdr send_msg{};
  // Receive memory when the kernel has no provided-buffer rings; allocated on first use.
  std::unique_ptr<char[]> fallback_receive_buffer;

  // TLS, once STARTTLS's 220 arrived or from the first byte (implicit TLS). Every byte of
  // the socket then goes through it; the session sees only plaintext.
  std::optional<TlsEngine> tls;
  // Ciphertext being sent: owned here while send_in_flight (the kernel reads it), and
  // not grown meanwhile. `tls_out_sent` bytes of it have gone out already.
  std::string tls_out;
  size_t tls_out_sent = 0;
  std::string tls_plaintext;  // scratch for decrypted bytes, reused
};

// Fixed-address slots (a deque never moves its elements) with a free list.
class ConnectionTable {
 public:
  uint32_t acquire() {
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      slot = uint32_t(slots_.size());
      slots_.emplace_back();
    }
    ++in_use_;
    return slot;
  }
  // Resets the slot and bumps its generation, so a stray completion is recognised.
  void release(uint32_t slot) {
    Connection& c = slots_[slot];
    uint32_t next_generation = c.generation + 1;
    c.~Connection();
    new (&c) Connection();
    c.generation = next_generation;
    free_.push_back(slot);
    --in_use_;
  }
  Connection& operator[](uint32_t slot) { return slots_[slot]; }
  const Connection& operator[](uint32_t slot) const { return slots_[slot]; }
  // The live connection a completion belongs to, or null when it is gone.
  Connection* find(uint32_t slot, uint32_t generation) {
    if (slot >= slots_.size()) return nullptr;
    Connection& c = slots_[slot];
    if (c.state == Connection::State::kFree) return nullptr;
    if ((c.generation & 0xFFFFFF) != generation) return nullptr;
    return &c;
  }
  size_t in_use() const { return in_use_; }
  size_t size() const { return slots_.size(); }

 private:
  std::deque<Connection> slots_;
  std::vector<uint32_t> free_;
  size_t in_use_ = 0;
};

}  // namespace ringmail::engine

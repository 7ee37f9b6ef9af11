// Where a recipient stands. queued -> in_flight -> delivered | deferred -> in_flight ... |
// bounced | expired; suppressed at enqueue (or when the address is suppressed later).
#pragma once

#include <optional>
#include <string_view>

namespace ringmail::storage {

enum class RecipientState {
  kQueued,      // waiting for its first (or a not-attempted) try; due at next_attempt_at
  kInFlight,    // claimed by a run under a lease
  kDelivered,   // a 2xx to the end of data: final
  kDeferred,    // a temporary failure; tried again at next_attempt_at
  kBounced,     // a permanent failure: final
  kExpired,     // deferred past the maximum age: final
  kSuppressed,  // on the suppression list: never sent, final
};

inline constexpr RecipientState kAllStates[] = {
    RecipientState::kQueued,  RecipientState::kInFlight, RecipientState::kDelivered,
    RecipientState::kDeferred, RecipientState::kBounced, RecipientState::kExpired,
    RecipientState::kSuppressed};

// The word stored in recipients.state.
std::string_view to_string(RecipientState state);
std::optional<RecipientState> parse_state(std::string_view word);
bool is_final(RecipientState state);

}  // namespace ringmail::storage

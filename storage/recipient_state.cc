#include "storage/recipient_state.h"

namespace ringmail::storage {

std::string_view to_string(RecipientState state) {
  switch (state) {
    case RecipientState::kQueued:
      return "queued";
    case RecipientState::kInFlight:
      return "in_flight";
    case RecipientState::kDelivered:
      return "delivered";
    case RecipientState::kDeferred:
      return "deferred";
    case RecipientState::kBounced:
      return "bounced";
    case RecipientState::kExpired:
      return "expired";
    case RecipientState::kSuppressed:
      return "suppressed";
  }
  return "?";
}

std::optional<RecipientState> parse_state(std::string_view word) {
  for (RecipientState s : kAllStates)
    if (to_string(s) == word) return s;
  return std::nullopt;
}

bool is_final(RecipientState state) {
  return state == RecipientState::kDelivered || state == RecipientState::kBounced ||
         state == RecipientState::kExpired || state == RecipientState::kSuppressed;
}

}  // namespace ringmail::storage

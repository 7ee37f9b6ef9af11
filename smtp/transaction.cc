// Names of recipient outcomes, for logs and summaries.
#include "smtp/transaction.h"

namespace ringmail::smtp {

const char* to_string(RecipientStatus status) {
  switch (status) {
    case RecipientStatus::kDelivered:
      return "delivered";
    case RecipientStatus::kDeferred:
      return "deferred";
    case RecipientStatus::kBounced:
      return "bounced";
  }
  return "unknown";
}

}  // namespace ringmail::smtp

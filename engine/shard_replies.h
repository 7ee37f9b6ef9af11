// Replies the engine makes itself (no server said them) and their RFC 3463 codes, shared
// by the shard's source files.
#pragma once

#include <string>

#include "smtp/reply.h"
#include "smtp/transaction.h"

namespace ringmail::engine {

inline smtp::Reply local_reply(smtp::EnhancedCode code, std::string text) {
  smtp::Reply reply;
  reply.enhanced = code;
  reply.text = std::move(text);
  return reply;
}

constexpr smtp::EnhancedCode kNoAnswer{4, 4, 1};
constexpr smtp::EnhancedCode kConnectionLost{4, 4, 2};
constexpr smtp::EnhancedCode kBadDestination{4, 4, 3};
constexpr smtp::EnhancedCode kTimedOut{4, 4, 7};
constexpr smtp::EnhancedCode kShutdown = smtp::kStoppedCode;  // see smtp::is_stop_reply
constexpr smtp::EnhancedCode kCongested{4, 4, 5};  // parked: the destination has a backlog
constexpr smtp::EnhancedCode kSecurityFailure{4, 7, 0};

}  // namespace ringmail::engine

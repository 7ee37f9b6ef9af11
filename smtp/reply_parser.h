// Incremental, bounded parser of SMTP replies (RFC 5321 §4.2): bytes in, whole replies
// out. Holds at most one line and one reply; anything longer is a protocol error, so a
// hostile server can cost us neither unbounded memory nor a crash.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "smtp/reply.h"

namespace ringmail::smtp {

struct ReplyLimits {
  // RFC 5321 allows 512 octets per reply line; Postfix tolerates up to 2048 (line_length_limit).
  size_t max_line_bytes = 2048;
  // A whole multi-line reply (EHLO lists a dozen lines; 64 KiB is generous).
  size_t max_reply_bytes = 64 * 1024;
  size_t max_reply_lines = 200;
};

enum class ReplyParseStatus {
  kNeedMore,  // the input was consumed; no complete reply yet
  kReply,     // a complete reply is in `reply`; call again with the rest of the input
  kError,     // malformed or oversized; the session must be closed. `error` says why.
};

struct ReplyParseResult {
  ReplyParseStatus status = ReplyParseStatus::kNeedMore;
  size_t consumed = 0;  // bytes of the input used, valid for every status
  Reply reply;          // with kReply
  std::string error;    // with kError, e.g. "reply line longer than 2048 bytes"
};

class ReplyParser {
 public:
  explicit ReplyParser(ReplyLimits limits = {});

  // Parses from `input` until one reply completes or the input runs out. Lines end in
  // CRLF; a bare LF is accepted as a line end too (robustness), a bare CR is not an end.
  // A line must be "ddd" + (' ' | '-' | end) + text, with the same code on every line of a
  // multi-line reply and a first digit 2..5. After kError the parser stays in error.
  ReplyParseResult parse(std::string_view input);

  // True when part of a reply has been received but not completed.
  bool in_reply() const;
  void reset();

 private:
  ReplyLimits limits_;
  std::string line_;     // current, incomplete line (bounded by max_line_bytes)
  Reply partial_;        // lines of the current reply so far
  size_t reply_bytes_ = 0;
  size_t reply_lines_ = 0;
  bool failed_ = false;
};

// Parses "x.y.z " at the start of `text` (the part after the code). On success fills
// `code` and returns the number of bytes it took, including one following space.
std::optional<size_t> parse_enhanced_code(std::string_view text, EnhancedCode& code);

}  // namespace ringmail::smtp

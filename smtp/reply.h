// An SMTP server reply as a value: the three-digit code, the RFC 3463 enhanced status
// code when the server gave one, and the text of all lines joined by '\n'.
#pragma once

#include <cstdint>
#include <string>

namespace ringmail::smtp {

// RFC 3463 "class.subject.detail", e.g. 5.1.1. All zero when absent.
struct EnhancedCode {
  uint8_t klass = 0;  // 2, 4 or 5
  uint16_t subject = 0;
  uint16_t detail = 0;

  bool present() const { return klass != 0; }
  std::string to_string() const;  // "5.1.1", or "" when absent
  friend bool operator==(const EnhancedCode&, const EnhancedCode&) = default;
};

struct Reply {
  int code = 0;  // 200..599 from a server; 0 for outcomes made locally (connection lost...)
  EnhancedCode enhanced;
  // Text after the code (and after the enhanced code when present), lines joined by '\n'.
  std::string text;

  bool positive_completion() const { return code >= 200 && code < 300; }
  bool positive_intermediate() const { return code >= 300 && code < 400; }
  bool transient_failure() const { return code >= 400 && code < 500; }
  bool permanent_failure() const { return code >= 500 && code < 600; }
  // "250 2.0.0 Ok" style, for logs and summaries.
  std::string to_string() const;
};

}  // namespace ringmail::smtp

// Text forms of replies and enhanced status codes, for logs and summaries.
#include "smtp/reply.h"

namespace ringmail::smtp {

std::string EnhancedCode::to_string() const {
  if (!present()) return {};
  return std::to_string(klass) + '.' + std::to_string(subject) + '.' + std::to_string(detail);
}

std::string Reply::to_string() const {
  std::string out;
  out.reserve(text.size() + 16);
  // Locally made replies have no code; "000" would read like a server's answer.
  if (code != 0) out += std::to_string(code);
  if (enhanced.present()) {
    if (!out.empty()) out += ' ';
    out += enhanced.to_string();
  }
  if (!text.empty()) {
    if (!out.empty()) out += ' ';
    // One line per summary: a multi-line reply's lines are joined by spaces.
    for (char c : text) out += c == '\n' ? ' ' : c;
  }
  return out;
}

}  // namespace ringmail::smtp

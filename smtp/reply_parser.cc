// Incremental SMTP reply parsing. Complete lines are parsed in place from the caller's
// input; only a line split across calls is copied, into a buffer that never grows past
// max_line_bytes. A line's size counts its line ending, as RFC 5321 §4.5.3.1.5 does.
#include "smtp/reply_parser.h"

#include <cstring>

namespace ringmail::smtp {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Up to 40 bytes of a bad line for the error text, with control bytes escaped so the
// message is safe to log.
std::string quote(std::string_view line) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char c : line.substr(0, 40)) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '"' && c != '\\') {
      out += c;
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  if (line.size() > 40) out += "...";
  out += '"';
  return out;
}

// 1 to 3 digits, as RFC 3463 allows for subject and detail.
std::optional<uint16_t> parse_small_number(std::string_view text, size_t& pos) {
  size_t start = pos;
  uint16_t value = 0;
  while (pos < text.size() && is_digit(text[pos]) && pos - start < 3) {
    value = uint16_t(value * 10 + (text[pos] - '0'));
    ++pos;
  }
  if (pos == start || (pos < text.size() && is_digit(text[pos]))) return std::nullopt;
  return value;
}

}  // namespace

std::optional<size_t> parse_enhanced_code(std::string_view text, EnhancedCode& code) {
  if (text.size() < 5) return std::nullopt;
  if (text[0] != '2' && text[0] != '4' && text[0] != '5') return std::nullopt;
  if (text[1] != '.') return std::nullopt;
  size_t pos = 2;
  std::optional<uint16_t> subject = parse_small_number(text, pos);
  if (!subject || pos >= text.size() || text[pos] != '.') return std::nullopt;
  ++pos;
  std::optional<uint16_t> detail = parse_small_number(text, pos);
  if (!detail) return std::nullopt;
  // The code must stand alone: "5.1.1" at the end of the text, or followed by a space.
  if (pos < text.size()) {
    if (text[pos] != ' ') return std::nullopt;
    ++pos;
  }
  code.klass = uint8_t(text[0] - '0');
  code.subject = *subject;
  code.detail = *detail;
  return pos;
}

ReplyParser::ReplyParser(ReplyLimits limits) : limits_(limits) {}

bool ReplyParser::in_reply() const { return reply_lines_ > 0 || !line_.empty(); }

void ReplyParser::reset() {
  line_.clear();
  partial_ = Reply{};
  reply_bytes_ = 0;
  reply_lines_ = 0;
  failed_ = false;
}

ReplyParseResult ReplyParser::parse(std::string_view input) {
  ReplyParseResult result;
  auto fail = [&](std::string error, size_t consumed) {
    failed_ = true;
    line_.clear();
    partial_ = Reply{};
    result.status = ReplyParseStatus::kError;
    result.error = std::move(error);
    result.consumed = consumed;
    return std::move(result);
  };
  if (failed_) return fail("reply parser used after an error", 0);

  size_t pos = 0;
  while (pos < input.size()) {
    const char* start = input.data() + pos;
    const size_t available = input.size() - pos;
    const auto* newline = static_cast<const char*>(std::memchr(start, '\n', available));
    if (newline == nullptr) {
      // The line needs at least one more byte (its '\n'): refuse it now rather than hold
      // more than max_line_bytes - 1 bytes of it.
      if (line_.size() + available >= limits_.max_line_bytes)
        return fail("reply line longer than " + std::to_string(limits_.max_line_bytes) + " bytes",
                    input.size());
      line_.append(start, available);
      result.consumed = input.size();
      return result;
    }
    const size_t taken = size_t(newline - start) + 1;
    const size_t line_bytes = line_.size() + taken;
    if (line_bytes > limits_.max_line_bytes)
      return fail("reply line longer than " + std::to_string(limits_.max_line_bytes) + " bytes",
                  pos + taken);
    pos += taken;
    reply_bytes_ += line_bytes;
    if (reply_bytes_ > limits_.max_reply_bytes)
      return fail("reply longer than " + std::to_string(limits_.max_reply_bytes) + " bytes", pos);
    if (++reply_lines_ > limits_.max_reply_lines)
      return fail("reply of more than " + std::to_string(limits_.max_reply_lines) + " lines", pos);

    std::string_view line;
    if (line_.empty()) {
      line = {start, taken - 1};
    } else {
      line_.append(start, taken - 1);
      line = line_;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    if (line.size() < 3 || line[0] < '2' || line[0] > '5' || !is_digit(line[1]) ||
        !is_digit(line[2]) || (line.size() > 3 && line[3] != ' ' && line[3] != '-'))
      return fail("malformed reply line " + quote(line), pos);
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    const bool first = reply_lines_ == 1;
    if (!first && code != partial_.code)
      return fail(
          "reply line " + quote(line) + " continues a " + std::to_string(partial_.code) + " reply",
          pos);
    const bool last = line.size() == 3 || line[3] == ' ';
    std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view{};
    // An enhanced code counts only when its class agrees with the reply code (RFC 3463
    // §2); otherwise it is ordinary text. Every line carries it; the first one is kept.
    EnhancedCode enhanced;
    if (std::optional<size_t> n = parse_enhanced_code(text, enhanced);
        n && enhanced.klass == code / 100) {
      text.remove_prefix(*n);
      if (first) partial_.enhanced = enhanced;
    }
    if (first) {
      partial_.code = code;
    } else {
      partial_.text += '\n';
    }
    partial_.text.append(text);
    line_.clear();

    if (last) {
      result.status = ReplyParseStatus::kReply;
      result.consumed = pos;
      result.reply = std::move(partial_);
      partial_ = Reply{};
      reply_bytes_ = 0;
      reply_lines_ = 0;
      return result;
    }
  }
  result.consumed = pos;
  return result;
}

}  // namespace ringmail::smtp

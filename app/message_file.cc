#include "app/message_file.h"

#include <fmt/format.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "smtp/message_body.h"

namespace ringmail::app {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// RFC 5322 §3.6.8: a field name is printable US-ASCII except ':' and space. Obsolete syntax
// allowed white space before the colon, which we tolerate.
bool is_field_name(std::string_view name) {
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (c < 33 || c > 126) return false;
  }
  return true;
}

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

}  // namespace

std::string MessageProblem::to_string(std::string_view file) const {
  if (line == 0) return fmt::format("{}: {}", file, reason);
  return fmt::format("{}:{}: {}", file, line, reason);
}

std::expected<void, MessageProblem> check_message_lines(std::string_view message) {
  uint64_t line = 1;
  size_t length = 0;  // octets of the current line so far, without its ending
  for (size_t i = 0; i < message.size(); ++i) {
    const char c = message[i];
    if (c == '\n' || c == '\r') {
      if (c == '\n') ++line;
      length = 0;
      continue;
    }
    if (c == '\0') return std::unexpected(MessageProblem{line, "NUL byte"});
    ++length;
    if (length > kMaxMessageLineOctets) {
      // Measured to the line's end, so the report says how much has to go.
      size_t end = message.find_first_of("\r\n", i);
      if (end == std::string_view::npos) end = message.size();
      return std::unexpected(
          MessageProblem{line, fmt::format("line longer than {} octets ({})", kMaxMessageLineOctets,
                                           length + (end - i - 1))});
    }
  }
  return {};
}

std::expected<std::string, MessageProblem> add_missing_header_fields(
    std::string_view message, const HeaderFieldDefaults& defaults) {
  if (message.empty()) return std::unexpected(MessageProblem{0, "the message is empty"});

  bool has_date = false;
  bool has_message_id = false;
  std::string_view eol = "\n";
  size_t header_end = message.size();  // where new fields go: after the last header line
  size_t fields = 0;
  size_t pos = 0;
  for (size_t line_number = 1; pos < message.size(); ++line_number) {
    size_t nl = message.find('\n', pos);
    std::string_view line = message.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
    if (line_number == 1 && line.ends_with('\r')) eol = "\r\n";
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      header_end = pos;
      break;
    }
    if (line.front() == ' ' || line.front() == '\t') {
      if (fields == 0) {
        return std::unexpected(
            MessageProblem{line_number, "the header starts with a continuation line, not a field"});
      }
    } else {
      size_t colon = line.find(':');
      if (colon == std::string_view::npos || !is_field_name(line.substr(0, colon))) {
        return std::unexpected(MessageProblem{
            line_number,
            "not a header field ('Name: value'); the header ends at the first empty line"});
      }
      std::string_view name = line.substr(0, colon);
      while (name.ends_with(' ') || name.ends_with('\t')) name.remove_suffix(1);
      has_date = has_date || iequals(name, "date");
      has_message_id = has_message_id || iequals(name, "message-id");
      ++fields;
    }
    if (nl == std::string_view::npos) {
      pos = message.size();
      break;
    }
    pos = nl + 1;
  }
  if (fields == 0) return std::unexpected(MessageProblem{0, "the message has no header fields"});

  std::string added;
  if (header_end == message.size() && !message.ends_with('\n')) added += eol;
  if (!has_date) added += fmt::format("Date: {}{}", defaults.date, eol);
  if (!has_message_id) added += fmt::format("Message-ID: {}{}", defaults.message_id, eol);

  std::string out;
  out.reserve(message.size() + added.size());
  out.append(message.substr(0, header_end));
  out.append(added);
  out.append(message.substr(header_end));
  return out;
}

std::string format_rfc5322_date(std::chrono::system_clock::time_point when) {
  // Names spelled out rather than strftime's %a/%b, which follow the locale.
  static constexpr std::array<const char*, 7> kDays = {"Sun", "Mon", "Tue", "Wed",
                                                       "Thu", "Fri", "Sat"};
  static constexpr std::array<const char*, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{}, {:02} {} {} {:02}:{:02}:{:02} +0000", kDays[tm.tm_wday], tm.tm_mday,
                     kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string make_message_id(std::string_view domain) {
  std::random_device entropy;
  std::array<uint32_t, 4> bits{entropy(), entropy(), entropy(), entropy()};
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  return fmt::format("<{:08x}{:08x}{:08x}{:08x}.{}@{}>", bits[0], bits[1], bits[2], bits[3], now,
                     domain);
}

std::expected<smtp::EncodedBody, std::string> load_message_file(
    const std::string& path, std::string_view message_id_domain) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return std::unexpected(fmt::format("cannot read message file '{}': is a directory", path));
  }
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::unexpected(fmt::format("cannot read message file '{}': {}", path,
                                       std::strerror(errno != 0 ? errno : ENOENT)));
  }
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) return std::unexpected(fmt::format("cannot read message file '{}'", path));
  std::string_view text = content.view();
  // Editors on Windows save UTF-8 with a byte order mark, which would hide the first field.
  if (text.starts_with(kUtf8Bom)) text.remove_prefix(kUtf8Bom.size());
  if (auto ok = check_message_lines(text); !ok) return std::unexpected(ok.error().to_string(path));

  HeaderFieldDefaults defaults{format_rfc5322_date(std::chrono::system_clock::now()),
                               make_message_id(message_id_domain)};
  auto message = add_missing_header_fields(text, defaults);
  if (!message) return std::unexpected(message.error().to_string(path));
  return std::make_shared<const std::string>(smtp::encode_data_body(*message));
}

}  // namespace ringmail::app

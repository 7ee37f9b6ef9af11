// EHLO keyword parsing. Runs once per connection, so clarity wins over speed here.
#include "smtp/capabilities.h"

#include <charconv>
#include <string_view>

namespace ringmail::smtp {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
  return out;
}

// Adds the mechanisms in `params` that are not listed yet (servers may repeat AUTH, once
// as "AUTH=..." for old clients).
void add_auth_mechanisms(std::string& list, std::string_view params) {
  while (!params.empty()) {
    size_t space = params.find(' ');
    std::string mechanism = upper(params.substr(0, space));
    params = space == std::string_view::npos ? std::string_view{} : params.substr(space + 1);
    if (mechanism.empty()) continue;
    bool known = false;
    for (std::string_view rest = list; !rest.empty() && !known;) {
      size_t end = rest.find(' ');
      known = rest.substr(0, end) == mechanism;
      rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    }
    if (known) continue;
    if (!list.empty()) list += ' ';
    list += mechanism;
  }
}

}  // namespace

Capabilities parse_ehlo_reply(const Reply& reply) {
  Capabilities caps;
  caps.esmtp = reply.positive_completion();
  std::string_view text = reply.text;
  size_t newline = text.find('\n');
  if (newline == std::string_view::npos) return caps;  // greeting line only
  text.remove_prefix(newline + 1);
  while (true) {
    newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    size_t space = line.find(' ');
    std::string keyword = upper(line.substr(0, space));
    std::string_view params =
        space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
    if (keyword.starts_with("AUTH=")) {
      params = line.substr(5);
      keyword = "AUTH";
    }
    if (keyword == "PIPELINING") {
      caps.pipelining = true;
    } else if (keyword == "SIZE") {
      caps.size = true;
      uint64_t limit = 0;
      auto [end, ec] = std::from_chars(params.data(), params.data() + params.size(), limit);
      caps.size_limit = ec == std::errc{} ? limit : 0;
    } else if (keyword == "8BITMIME") {
      caps.eight_bit_mime = true;
    } else if (keyword == "SMTPUTF8") {
      caps.smtputf8 = true;
    } else if (keyword == "ENHANCEDSTATUSCODES") {
      caps.enhanced_status_codes = true;
    } else if (keyword == "STARTTLS") {
      caps.starttls = true;
    } else if (keyword == "CHUNKING") {
      caps.chunking = true;
    } else if (keyword == "DSN") {
      caps.dsn = true;
    } else if (keyword == "AUTH") {
      add_auth_mechanisms(caps.auth_mechanisms, params);
    }
    if (newline == std::string_view::npos) break;
    text.remove_prefix(newline + 1);
  }
  return caps;
}

}  // namespace ringmail::smtp

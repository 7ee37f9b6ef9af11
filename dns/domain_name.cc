#include "dns/domain_name.h"

namespace ringmail::dns {
namespace {

std::string quoted_prefix(std::string_view domain) {
  constexpr size_t kShown = 64;
  std::string text = "\"";
  for (char c : domain.substr(0, kShown)) text += (c >= 0x20 && c < 0x7f) ? c : '?';
  text += domain.size() > kShown ? "...\"" : "\"";
  return text;
}

bool allowed(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

}  // namespace

std::expected<std::string, std::string> normalize_domain(std::string_view domain) {
  if (domain.ends_with('.')) domain.remove_suffix(1);
  if (domain.empty()) return std::unexpected("empty domain name");
  if (domain.size() > kMaxDomainTextLength)
    return std::unexpected("domain name longer than " + std::to_string(kMaxDomainTextLength) +
                           " characters: " + quoted_prefix(domain));
  std::string name(domain);
  size_t label_length = 0;
  for (char& c : name) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '.') {
      if (label_length == 0) return std::unexpected("empty label in " + quoted_prefix(domain));
      label_length = 0;
      continue;
    }
    if (!allowed(c)) return std::unexpected("invalid character in " + quoted_prefix(domain));
    if (++label_length > kMaxLabelLength)
      return std::unexpected("label longer than 63 characters in " + quoted_prefix(domain));
  }
  if (label_length == 0) return std::unexpected("empty label in " + quoted_prefix(domain));
  return name;
}

}  // namespace ringmail::dns

#include "app/mailbox.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace ringmail::app {
namespace {

constexpr size_t kMaxMailbox = 254;  // RFC 5321 §4.5.3.1.3: 256 for the path, minus "<>"
constexpr size_t kMaxLocalPart = 64;
constexpr size_t kMaxDomain = 255;
constexpr size_t kMaxLabel = 63;

// ASCII only, whatever the locale: these rules are about octets on the wire.
bool is_alnum(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_atext(unsigned char c) {
  return is_alnum(c) || (c != '\0' && std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr);
}

bool is_ldh(unsigned char c) { return is_alnum(c) || c == '-'; }

std::string lower(std::string_view s) {
  std::string out(s);
  std::ranges::transform(out, out.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  return out;
}

// Characters no part of an address may hold. Checked first, over the whole value, so the
// reason names the dangerous byte rather than some later syntax rule it happens to break;
// line breaks and other controls (the injection vectors) are looked for before the rest.
std::expected<void, std::string> check_octets(std::string_view s, std::string_view what) {
  for (unsigned char c : s) {
    if (c == '\r') return std::unexpected(fmt::format("carriage return in {}", what));
    if (c == '\n') return std::unexpected(fmt::format("line feed in {}", what));
    if (c < 0x20 || c == 0x7f) {
      return std::unexpected(fmt::format("control character 0x{:02X} in {}", c, what));
    }
  }
  for (unsigned char c : s) {
    if (c >= 0x80) {
      return std::unexpected(
          fmt::format("non-ASCII character in {} (SMTPUTF8 is not supported)", what));
    }
    if (c == ' ') return std::unexpected(fmt::format("space in {}", what));
    if (c == '<' || c == '>') return std::unexpected(fmt::format("'{}' in {}", char(c), what));
  }
  return {};
}

std::expected<void, std::string> check_address_literal(std::string_view literal) {
  // literal includes the brackets.
  if (literal.size() < 3 || literal.back() != ']') {
    return std::unexpected(fmt::format("invalid address literal '{}'", literal));
  }
  std::string inner(literal.substr(1, literal.size() - 2));
  unsigned char buf[16];
  constexpr std::string_view kV6Tag = "IPv6:";
  if (inner.size() > kV6Tag.size() && lower(inner.substr(0, kV6Tag.size())) == "ipv6:") {
    if (inet_pton(AF_INET6, inner.c_str() + kV6Tag.size(), buf) == 1) return {};
  } else if (inet_pton(AF_INET, inner.c_str(), buf) == 1) {
    return {};
  }
  return std::unexpected(fmt::format("invalid address literal '{}'", literal));
}

std::expected<void, std::string> check_domain_syntax(std::string_view domain) {
  if (domain.empty()) return std::unexpected("empty domain");
  if (domain.size() > kMaxDomain) {
    return std::unexpected(fmt::format("domain longer than {} octets", kMaxDomain));
  }
  if (domain.front() == '[') return check_address_literal(domain);
  size_t start = 0;
  while (true) {
    size_t dot = domain.find('.', start);
    std::string_view label =
        domain.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty()) return std::unexpected("empty label in domain");
    if (label.size() > kMaxLabel) {
      return std::unexpected(fmt::format("domain label longer than {} octets", kMaxLabel));
    }
    for (unsigned char c : label) {
      if (!is_ldh(c)) {
        return std::unexpected(fmt::format("invalid character '{}' in domain", char(c)));
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return std::unexpected(fmt::format("domain label '{}' starts or ends with '-'", label));
    }
    if (dot == std::string_view::npos) return {};
    start = dot + 1;
  }
}

std::expected<void, std::string> check_local_part(std::string_view local) {
  if (local.empty()) return std::unexpected("empty local part");
  if (local.size() > kMaxLocalPart) {
    return std::unexpected(fmt::format("local part longer than {} octets", kMaxLocalPart));
  }
  if (local.front() == '"') return std::unexpected("quoted local part is not supported");
  for (unsigned char c : local) {
    if (c != '.' && !is_atext(c)) {
      return std::unexpected(fmt::format("invalid character '{}' in local part", char(c)));
    }
  }
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) {
    return std::unexpected("misplaced '.' in local part");
  }
  return {};
}

}  // namespace

std::expected<std::string, std::string> validate_mailbox(std::string_view address) {
  if (address.empty()) return std::unexpected("empty address");
  if (auto ok = check_octets(address, "address"); !ok) return std::unexpected(ok.error());
  if (address.size() > kMaxMailbox) {
    return std::unexpected(fmt::format("address longer than {} octets", kMaxMailbox));
  }
  size_t at = address.find('@');
  if (at == std::string_view::npos) return std::unexpected("missing '@'");
  if (address.find('@', at + 1) != std::string_view::npos) {
    return std::unexpected("more than one '@'");
  }
  if (auto ok = check_local_part(address.substr(0, at)); !ok) return std::unexpected(ok.error());
  std::string_view domain = address.substr(at + 1);
  if (auto ok = check_domain_syntax(domain); !ok) return std::unexpected(ok.error());
  return lower(domain);
}

std::expected<std::string, std::string> validate_domain(std::string_view domain) {
  if (auto ok = check_octets(domain, "domain"); !ok) return std::unexpected(ok.error());
  if (auto ok = check_domain_syntax(domain); !ok) return std::unexpected(ok.error());
  return lower(domain);
}

}  // namespace ringmail::app

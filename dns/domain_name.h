// Domain names as the resolver accepts them: checked against the DNS limits and put in one
// canonical form (lower case, no trailing dot) before any query or cache lookup.
#pragma once

#include <cstddef>
#include <expected>
#include <string>
#include <string_view>

namespace ringmail::dns {

// 253 characters of text are 255 octets on the wire (RFC 1035 §2.3.4), counting the length
// octets and the root label.
inline constexpr size_t kMaxDomainTextLength = 253;
inline constexpr size_t kMaxLabelLength = 63;

// `domain` lower-cased (ASCII only) with one trailing dot removed, or why it is not a
// domain the resolver will look up: empty, longer than kMaxDomainTextLength, an empty or
// over-long label, or a character other than letters, digits, '-' and '_' (an
// internationalised domain must come as A-labels, "xn--..."). Nothing is allocated for a
// rejected name beyond the error text, which quotes at most the first 64 characters.
std::expected<std::string, std::string> normalize_domain(std::string_view domain);

}  // namespace ringmail::dns

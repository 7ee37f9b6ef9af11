// Checks envelope addresses (RFC 5321 Mailbox) and host names before they reach the SMTP
// session, strictly enough that no value passing them can inject a command.
#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace ringmail::app {

// Accepts `local@domain` where the local part is a dot-string of atext (at most 64 octets)
// and the domain is LDH labels (at most 255 octets) or an address literal ([1.2.3.4],
// [IPv6:...]). Refuses anything outside printable US-ASCII (CR, LF, NUL; UTF-8 since we do
// not negotiate SMTPUTF8), spaces, '<' '>', quoted local parts and all but exactly one '@'.
// Returns the domain lower-cased (the routing key), or why the address is refused.
std::expected<std::string, std::string> validate_mailbox(std::string_view address);

// Accepts a domain or an address literal as validate_mailbox() does for the part after '@'
// (used for the EHLO name). Returns it lower-cased, or why it is refused.
std::expected<std::string, std::string> validate_domain(std::string_view domain);

}  // namespace ringmail::app

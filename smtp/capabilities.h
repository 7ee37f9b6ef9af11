// What a server advertised in its EHLO reply (RFC 5321 §4.1.1.1 and the extensions'
// RFCs). Recorded even where ringmail does not use the extension yet.
#pragma once

#include <cstdint>
#include <string>

#include "smtp/reply.h"

namespace ringmail::smtp {

struct Capabilities {
  bool esmtp = false;  // EHLO succeeded (false after a HELO fallback)
  bool pipelining = false;
  bool size = false;
  uint64_t size_limit = 0;  // 0: no limit given
  bool eight_bit_mime = false;
  bool smtputf8 = false;
  bool enhanced_status_codes = false;
  bool starttls = false;
  bool chunking = false;
  bool dsn = false;
  std::string auth_mechanisms;  // as advertised, space separated, upper case ("PLAIN LOGIN")
};

// Reads the keywords of a 250 EHLO reply; the first line (the greeting text) is skipped.
// Unknown keywords are ignored; keywords are case-insensitive.
Capabilities parse_ehlo_reply(const Reply& reply);

}  // namespace ringmail::smtp

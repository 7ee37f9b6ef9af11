// Loads the message every recipient gets (RFC 5322), adds the Date: and Message-ID: fields
// a sender must supply when the file lacks them, and encodes it once for DATA.
#pragma once

#include <chrono>
#include <expected>
#include <string>
#include <string_view>

#include "smtp/transaction.h"

namespace ringmail::app {

// Values for the fields add_missing_header_fields() may add, without the field names.
struct HeaderFieldDefaults {
  std::string date;        // e.g. "Tue, 01 Jul 2025 12:34:56 +0000"
  std::string message_id;  // e.g. "<9f86d081884c7d65@mail.example.com>"
};

// Returns `message` with "Date:" and/or "Message-ID:" appended to its header when absent
// (names compared case-insensitively; the header ends at the first empty line), using the
// header's own line ending (CRLF when its first line ends so, LF otherwise). Fails when the
// message is empty or a header line is neither a field ("Name: value") nor a continuation.
std::expected<std::string, std::string> add_missing_header_fields(
    std::string_view message, const HeaderFieldDefaults& defaults);

// RFC 5322 §3.3 date-time in UTC: "Tue, 01 Jul 2025 12:34:56 +0000".
std::string format_rfc5322_date(std::chrono::system_clock::time_point when);

// "<random.time@domain>" with 128 random bits, unique across runs and hosts.
std::string make_message_id(std::string_view domain);

// Reads `path`, completes its header (Message-ID under `message_id_domain`, Date now) and
// encodes it with smtp::encode_data_body. Errors name the file.
std::expected<smtp::EncodedBody, std::string> load_message_file(const std::string& path,
                                                                std::string_view message_id_domain);

}  // namespace ringmail::app

// Loads the message every recipient gets (RFC 5322), adds the Date: and Message-ID: fields
// a sender must supply when the file lacks them, and encodes it once for DATA.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
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

// Why a message is refused: `line` is 1-based (lines end at LF), 0 when the message as a
// whole is at fault.
struct MessageProblem {
  uint64_t line = 0;
  std::string reason;

  // "FILE:LINE: reason", or "FILE: reason" without a line.
  std::string to_string(std::string_view file) const;
};

// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
inline constexpr size_t kMaxMessageLineOctets = 998;

// Refuses a line longer than kMaxMessageLineOctets (counted without its line ending, before
// dot-stuffing; a bare CR ends a line as smtp::encode_data_body reads it) and a NUL byte,
// which servers truncate or reject mid-message. The first offending line is reported.
std::expected<void, MessageProblem> check_message_lines(std::string_view message);

// Returns `message` with "Date:" and/or "Message-ID:" appended to its header when absent
// (names compared case-insensitively; the header ends at the first empty line), using the
// header's own line ending (CRLF when its first line ends so, LF otherwise). Fails when the
// message is empty or a header line is neither a field ("Name: value") nor a continuation.
std::expected<std::string, MessageProblem> add_missing_header_fields(
    std::string_view message, const HeaderFieldDefaults& defaults);

// RFC 5322 §3.3 date-time in UTC: "Tue, 01 Jul 2025 12:34:56 +0000".
std::string format_rfc5322_date(std::chrono::system_clock::time_point when);

// "<random.time@domain>" with 128 random bits, unique across runs and hosts.
std::string make_message_id(std::string_view domain);

// Reads `path`, skips a leading UTF-8 byte order mark, checks its lines
// (check_message_lines), completes its header (Message-ID under `message_id_domain`, Date
// now) and encodes it with smtp::encode_data_body. Errors are "FILE:LINE: reason" (or
// "FILE: reason"); a file that cannot be read is "cannot read message file 'FILE': ...".
std::expected<smtp::EncodedBody, std::string> load_message_file(const std::string& path,
                                                                std::string_view message_id_domain);

}  // namespace ringmail::app

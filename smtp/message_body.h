// Turns message content into the bytes that follow DATA (RFC 5321 §4.5.2): every line
// ending becomes CRLF (bare LF and bare CR included) and a line starting with '.' gets one
// more '.', so no content can end the data early or smuggle commands after it.
#pragma once

#include <string>
#include <string_view>

namespace ringmail::smtp {

// Returns the encoded body, always ending in CRLF (one is added if the content does not
// end with a line ending), without the terminating ".\r\n". Empty content gives "".
// A NUL byte is passed through unchanged (8BITMIME/binary policy is the caller's).
std::string encode_data_body(std::string_view content);

}  // namespace ringmail::smtp

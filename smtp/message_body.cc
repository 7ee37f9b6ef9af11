// DATA encoding: line endings normalised to CRLF and leading dots doubled, in one pass.
#include "smtp/message_body.h"

namespace ringmail::smtp {

std::string encode_data_body(std::string_view content) {
  std::string out;
  if (content.empty()) return out;
  // Room for a few CR insertions and dot doublings, so typical content never reallocates.
  out.reserve(content.size() + content.size() / 32 + 8);
  const char* p = content.data();
  const char* const end = p + content.size();
  while (p < end) {
    // At the start of a line: a '.' here would end DATA early or look like the terminator.
    if (*p == '.') out += '.';
    const char* eol = p;
    while (eol < end && *eol != '\n' && *eol != '\r') ++eol;
    out.append(p, eol);
    out += "\r\n";
    if (eol == end) break;  // content without a final line ending gets one
    // CRLF is one line ending; a bare CR or a bare LF is one too.
    p = eol + ((*eol == '\r' && eol + 1 < end && eol[1] == '\n') ? 2 : 1);
  }
  return out;
}

}  // namespace ringmail::smtp

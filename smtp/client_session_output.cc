// The session's output: commands coalesced into owned segments, bodies as segments that
// point into the shared body. Bytes never move once queued (commands are appended only
// within a segment's capacity), so the transport may keep a send in flight while the
// session takes input, and a slot's buffer is reused once it has been sent.
#include <algorithm>
#include <charconv>

#include "smtp/client_session.h"
#include "smtp/secret.h"

namespace ringmail::smtp {
namespace {

// Enough for a dot, an RSET and a short envelope, so one message's commands fit in one
// segment. Also keeps every owned buffer on the heap (above the small-string size), so
// moving a segment when the ring grows does not move its bytes.
constexpr size_t kCommandBufferBytes = 512;

}  // namespace

std::string& ClientSession::command_buffer(size_t bytes) {
  if (!out_.empty()) {
    OutSegment& tail = out_.back();
    if (!tail.body && tail.owned.capacity() - tail.owned.size() >= bytes) return tail.owned;
  }
  OutSegment& segment = out_.push_back();
  segment.body.reset();
  segment.offset = 0;
  segment.secret = false;
  segment.owned.clear();
  segment.owned.reserve(std::max(bytes, kCommandBufferBytes));
  return segment.owned;
}

void ClientSession::queue_command(std::initializer_list<std::string_view> parts, Command expect) {
  size_t bytes = 0;
  for (std::string_view part : parts) bytes += part.size();
  std::string& buffer = command_buffer(bytes);
  for (std::string_view part : parts) buffer.append(part);
  queued_bytes_ += bytes;
  expected_.push_back() = expect;
}

void ClientSession::queue_secret(std::string command, Command expect) {
  queue_command({command}, expect);
  out_.back().secret = true;
  wipe_secret(command);
}

void ClientSession::queue_mail(Pending& p) {
  p.mail_offset = queued_bytes_;
  const Transaction& t = p.outcome.transaction;
  if (capabilities_.size) {
    char digits[24];
    const uint64_t size = t.body ? t.body->size() : 0;
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, size);
    queue_command({"MAIL FROM:<", t.sender, "> SIZE=", std::string_view(digits, end), "\r\n"},
                  Command::kMail);
  } else {
    queue_command({"MAIL FROM:<", t.sender, ">\r\n"}, Command::kMail);
  }
}

void ClientSession::queue_rcpt(Pending& p, size_t index) {
  queue_command({"RCPT TO:<", p.outcome.transaction.recipients[index], ">\r\n"}, Command::kRcpt);
}

void ClientSession::queue_envelope(Pending& p) {
  // Room for the whole group first, so it lands in one segment.
  const Transaction& t = p.outcome.transaction;
  size_t bytes = (need_rset_ ? 6 : 0) + 11 + t.sender.size() + 3 + 30 + 6;
  for (const std::string& r : t.recipients) bytes += 9 + r.size() + 3;
  command_buffer(bytes);
  if (need_rset_) {
    queue_command({"RSET\r\n"}, Command::kRset);
    need_rset_ = false;
  }
  queue_mail(p);
  for (size_t i = 0; i < t.recipients.size(); ++i) queue_rcpt(p, i);
  queue_command({"DATA\r\n"}, Command::kData);
  p.send = SendStage::kEnvelopeSent;
}

void ClientSession::queue_body_and_dot(Pending& p) {
  const EncodedBody& body = p.outcome.transaction.body;
  if (body && !body->empty()) {
    OutSegment& segment = out_.push_back();
    segment.body = body;  // shares the body; released once sent
    segment.owned.clear();
    segment.offset = 0;
    segment.secret = false;
    queued_bytes_ += body->size();
  }
  queue_command({".\r\n"}, Command::kDot);
}

size_t ClientSession::pending_output(std::span<std::string_view> out) const {
  if (output_withdrawn_) return 0;
  size_t n = 0;
  for (; n < out.size() && n < out_.size(); ++n) {
    const OutSegment& segment = out_[n];
    std::string_view bytes = segment.body ? std::string_view(*segment.body) : segment.owned;
    out[n] = bytes.substr(segment.offset);
  }
  return n;
}

size_t ClientSession::pending_output_bytes() const {
  return output_withdrawn_ ? 0 : size_t(queued_bytes_ - sent_bytes_);
}

void ClientSession::mark_sent(size_t bytes) {
  if (output_withdrawn_) return;  // a send that was in flight when the session failed
  bytes = std::min<uint64_t>(bytes, queued_bytes_ - sent_bytes_);
  sent_bytes_ += bytes;
  while (bytes > 0) {
    OutSegment& segment = out_.front();
    const size_t size = segment.body ? segment.body->size() : segment.owned.size();
    const size_t left = size - segment.offset;
    if (bytes < left) {
      segment.offset += bytes;
      return;
    }
    bytes -= left;
    segment.body.reset();
    if (segment.secret) wipe_secret(segment.owned);
    segment.secret = false;
    segment.owned.clear();  // keeps the capacity for the slot's next use
    out_.pop_front();
  }
}

}  // namespace ringmail::smtp

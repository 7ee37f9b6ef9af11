#include "app/recipients_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "app/mailbox.h"

namespace ringmail::app {
namespace {

// A quoted CSV field may span lines (RFC 4180), but a stray quote must not swallow the rest
// of the file: past this many lines the record is refused and reading resumes after it.
constexpr uint64_t kMaxLinesPerCsvRecord = 100;

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

std::string_view trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_text_comment_or_blank(std::string_view line) {
  std::string_view t = trim(line);
  return t.empty() || t.front() == '#';
}

enum class CsvError { kOpenQuote, kTextAfterQuote };

// Splits one CSV record into its fields: unquoted fields are trimmed of spaces and tabs;
// quoted fields keep everything between the quotes, with "" standing for one quote.
std::expected<std::vector<std::string>, CsvError> split_csv(std::string_view record) {
  std::vector<std::string> fields;
  size_t i = 0;
  while (true) {
    while (i < record.size() && (record[i] == ' ' || record[i] == '\t')) ++i;
    std::string field;
    if (i < record.size() && record[i] == '"') {
      ++i;
      while (true) {
        if (i >= record.size()) return std::unexpected(CsvError::kOpenQuote);
        if (record[i] == '"') {
          if (i + 1 < record.size() && record[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += record[i++];
      }
      while (i < record.size() && (record[i] == ' ' || record[i] == '\t')) ++i;
      if (i < record.size() && record[i] != ',') return std::unexpected(CsvError::kTextAfterQuote);
    } else {
      size_t comma = record.find(',', i);
      field = trim(
          record.substr(i, comma == std::string_view::npos ? std::string_view::npos : comma - i));
      i = comma == std::string_view::npos ? record.size() : comma;
    }
    fields.push_back(std::move(field));
    if (i >= record.size()) return fields;
    ++i;  // the comma
  }
}

std::optional<RecipientsFormat> format_from_extension(const std::string& path) {
  std::string ext = ascii_lower(std::filesystem::path(path).extension().string());
  if (ext == ".txt") return RecipientsFormat::kText;
  if (ext == ".csv") return RecipientsFormat::kCsv;
  if (ext == ".jsonl" || ext == ".ndjson") return RecipientsFormat::kJsonLines;
  return std::nullopt;
}

std::optional<size_t> find_email_column(const std::vector<std::string>& header) {
  for (size_t i = 0; i < header.size(); ++i) {
    if (ascii_lower(trim(header[i])) == "email") return i;
  }
  return std::nullopt;
}

}  // namespace

std::optional<uint64_t> SeenAddresses::find_or_add(std::string_view address, uint64_t line) {
  if ((count_ + 1) * 4 > slots_.size() * 3) grow();
  const uint64_t hash = std::hash<std::string_view>{}(address);
  const size_t mask = slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    Slot& slot = slots_[i];
    if (slot.at == 0) {
      slot = Slot{hash, append(address, line)};
      ++count_;
      return std::nullopt;
    }
    if (slot.hash == hash && text_at(slot.at) == address) return line_at(slot.at);
  }
}

// An entry: the line (8 octets), the text's length (2 octets: an address has at most 254
// and a line at most RecipientsFile::kMaxLineOctets), the text.
uint64_t SeenAddresses::append(std::string_view address, uint64_t line) {
  const uint16_t size = static_cast<uint16_t>(std::min<size_t>(address.size(), UINT16_MAX));
  const size_t entry = sizeof line + sizeof size + size;
  if (kBlockOctets - block_used_ < entry) {
    blocks_.push_back(std::make_unique<char[]>(kBlockOctets));
    block_used_ = 0;
  }
  char* p = blocks_.back().get() + block_used_;
  std::memcpy(p, &line, sizeof line);
  std::memcpy(p + sizeof line, &size, sizeof size);
  std::memcpy(p + sizeof line + sizeof size, address.data(), size);
  const uint64_t at = 1 + (blocks_.size() - 1) * kBlockOctets + block_used_;
  block_used_ += entry;
  return at;
}

uint64_t SeenAddresses::line_at(uint64_t at) const {
  const char* p = blocks_[(at - 1) / kBlockOctets].get() + (at - 1) % kBlockOctets;
  uint64_t line = 0;
  std::memcpy(&line, p, sizeof line);
  return line;
}

std::string_view SeenAddresses::text_at(uint64_t at) const {
  const char* p = blocks_[(at - 1) / kBlockOctets].get() + (at - 1) % kBlockOctets;
  uint16_t size = 0;
  std::memcpy(&size, p + sizeof(uint64_t), sizeof size);
  return {p + sizeof(uint64_t) + sizeof size, size};
}

void SeenAddresses::grow() {
  std::vector<Slot> old(std::max<size_t>(1024, slots_.size() * 2));
  old.swap(slots_);
  const size_t mask = slots_.size() - 1;
  for (const Slot& slot : old) {
    if (slot.at == 0) continue;
    size_t i = slot.hash & mask;
    while (slots_[i].at != 0) i = (i + 1) & mask;
    slots_[i] = slot;
  }
}

const char* to_string(RecipientsFormat format) {
  switch (format) {
    case RecipientsFormat::kText:
      return "text";
    case RecipientsFormat::kCsv:
      return "csv";
    case RecipientsFormat::kJsonLines:
      return "jsonl";
  }
  return "?";
}

std::string RejectedLine::to_string() const { return fmt::format("{}:{}: {}", file, line, reason); }

std::expected<RecipientsFile, std::string> RecipientsFile::open(const std::string& path) {
  return open_as(path, std::nullopt);
}

std::expected<RecipientsFile, std::string> RecipientsFile::open(const std::string& path,
                                                                RecipientsFormat format) {
  return open_as(path, format);
}

std::expected<RecipientsFile, std::string> RecipientsFile::open_as(
    const std::string& path, std::optional<RecipientsFormat> format) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return std::unexpected(fmt::format("cannot read recipients file '{}': is a directory", path));
  }
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::unexpected(fmt::format("cannot read recipients file '{}': {}", path,
                                       std::strerror(errno != 0 ? errno : ENOENT)));
  }
  RecipientsFile file(path, std::move(in));
  if (auto ok = file.start(format); !ok) return std::unexpected(ok.error());
  return file;
}

bool RecipientsFile::read_physical_line(std::string& line) {
  // Read in chunks rather than with std::getline, which would hold a line of any length
  // (a file with no newline at all) in memory whole.
  line.clear();
  uint64_t length = 0;  // octets of the whole line, kept or not
  char last = 0;
  bool first_chunk = true;
  std::array<char, 4096> chunk;
  while (true) {
    in_.getline(chunk.data(), chunk.size());
    if (in_.bad()) {
      read_failed_ = true;
      return false;
    }
    // No failbit and no eofbit: the newline ended the line (counted by gcount, not stored).
    // failbit alone: the chunk filled before a newline. eofbit: the file ended (with
    // failbit too when nothing at all was read).
    const bool newline = !in_.fail() && !in_.eof();
    const bool filled = in_.fail() && !in_.eof();
    const auto stored = static_cast<size_t>(in_.gcount()) - (newline ? 1 : 0);
    if (stored > 0) {
      if (line.size() < kMaxLineOctets)
        line.append(chunk.data(), std::min(stored, kMaxLineOctets - line.size()));
      last = chunk[stored - 1];
      length += stored;
    }
    if (filled) {
      in_.clear();
      first_chunk = false;
      continue;
    }
    if (!newline && first_chunk && stored == 0) return false;  // the end, nothing read
    break;
  }
  if (last == '\r') {
    --length;
    if (line.size() > length) line.pop_back();
  }
  // Spreadsheets often save UTF-8 CSV with a byte order mark, which would hide "email".
  if (physical_lines_++ == 0 && line.starts_with(kUtf8Bom)) {
    line.erase(0, kUtf8Bom.size());
    length -= kUtf8Bom.size();
  }
  physical_length_ = length;
  return true;
}

bool RecipientsFile::read_line(std::string& line) {
  if (replay_next_ < replay_.size()) {
    ReplayedLine& replayed = replay_[replay_next_++];
    line = std::move(replayed.text);
    line_length_ = replayed.length;
    if (replay_next_ == replay_.size()) {
      replay_.clear();
      replay_next_ = 0;
    }
  } else if (read_physical_line(line)) {
    line_length_ = physical_length_;
  } else {
    return false;
  }
  ++line_number_;
  return true;
}

RejectedLine RecipientsFile::too_long(uint64_t line) const {
  return reject(line, fmt::format("line longer than {} octets ({})", kMaxLineOctets, line_length_));
}

std::expected<void, std::string> RecipientsFile::start(std::optional<RecipientsFormat> format) {
  if (!format) format = format_from_extension(path_);
  if (!format) {
    // Sniff the first record; the lines read are replayed by read_line().
    format = RecipientsFormat::kText;
    std::string line;
    while (read_physical_line(line)) {
      replay_.push_back(ReplayedLine{line, physical_length_});
      // An overlong line is judged by its first kMaxLineOctets, then refused when read.
      if (is_text_comment_or_blank(line)) continue;
      if (trim(line).front() == '{') {
        format = RecipientsFormat::kJsonLines;
      } else if (auto fields = split_csv(line); fields && find_email_column(*fields)) {
        format = RecipientsFormat::kCsv;
      }
      break;
    }
  }
  format_ = *format;
  if (format_ != RecipientsFormat::kCsv) return {};

  std::string header;
  while (read_line(header)) {
    if (line_too_long()) return std::unexpected(too_long(line_number_).to_string());
    // Blank and '#' lines before the header are skipped, as the sniffing above does.
    if (is_text_comment_or_blank(header)) continue;
    auto fields = split_csv(header);
    if (!fields) {
      return std::unexpected(fmt::format("{}:{}: malformed CSV header", path_, line_number_));
    }
    auto column = find_email_column(*fields);
    if (!column) {
      return std::unexpected(fmt::format("{}:{}: CSV header has no 'email' column (header: {})",
                                         path_, line_number_, header));
    }
    email_column_ = *column;
    return {};
  }
  if (read_failed_) {
    return std::unexpected(fmt::format("cannot read recipients file '{}': read error", path_));
  }
  return std::unexpected(
      fmt::format("{}: CSV file has no header row (one with an 'email' column)", path_));
}

RejectedLine RecipientsFile::reject(uint64_t line, std::string reason) const {
  return RejectedLine{path_, line, std::move(reason)};
}

RecipientRecord RecipientsFile::accept(std::string_view address, uint64_t line) const {
  auto domain = validate_mailbox(address);
  if (!domain) return std::unexpected(reject(line, std::move(domain.error())));
  return Recipient{std::string(address), std::move(*domain), line};
}

std::optional<RecipientRecord> RecipientsFile::end_of_input() {
  if (!read_failed_ || read_error_reported_) return std::nullopt;
  read_error_reported_ = true;
  return std::unexpected(reject(line_number_ + 1, "read error; the rest of the file is skipped"));
}

std::optional<RecipientRecord> RecipientsFile::next() {
  while (auto record = next_record()) {
    if (!record->has_value()) return record;
    const Recipient& r = **record;
    lowered_.assign(r.address);
    for (char& c : lowered_) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    const std::optional<uint64_t> first = seen_.find_or_add(lowered_, r.line);
    if (!first) return record;
    ++duplicates_;
    if (report_duplicates_) {
      return std::unexpected(RejectedLine{path_, r.line,
                                          fmt::format("duplicate of line {}", *first),
                                          RejectedLine::Kind::kDuplicate});
    }
  }
  return std::nullopt;
}

bool RecipientsFile::has_no_records() {
  if (!peeked_) peeked_.emplace(next_record());
  return !peeked_->has_value();
}

std::optional<RecipientRecord> RecipientsFile::next_record() {
  if (peeked_) {
    std::optional<RecipientRecord> record = std::move(*peeked_);
    peeked_.reset();
    return record;
  }
  switch (format_) {
    case RecipientsFormat::kText:
      return next_text();
    case RecipientsFormat::kCsv:
      return next_csv();
    case RecipientsFormat::kJsonLines:
      return next_json();
  }
  return std::nullopt;
}

std::optional<RecipientRecord> RecipientsFile::next_text() {
  while (read_line(line_)) {
    if (line_too_long()) return std::unexpected(too_long(line_number_));
    if (is_text_comment_or_blank(line_)) continue;
    return accept(trim(line_), line_number_);
  }
  return end_of_input();
}

std::optional<RecipientRecord> RecipientsFile::next_csv() {
  while (read_line(line_)) {
    if (line_too_long()) return std::unexpected(too_long(line_number_));
    if (trim(line_).empty()) continue;
    const uint64_t first_line = line_number_;
    auto fields = split_csv(line_);
    if (!fields && fields.error() == CsvError::kOpenQuote) {
      std::string record = line_;
      while (!fields && fields.error() == CsvError::kOpenQuote) {
        if (line_number_ - first_line + 1 >= kMaxLinesPerCsvRecord) {
          return std::unexpected(
              reject(first_line, fmt::format("unterminated quoted field; lines {}-{} skipped",
                                             first_line, line_number_)));
        }
        if (!read_line(line_)) {
          if (read_failed_) return end_of_input();
          return std::unexpected(
              reject(first_line, "unterminated quoted field at the end of the file"));
        }
        if (line_too_long()) {
          return std::unexpected(
              reject(first_line, fmt::format("line {} of the record is longer than {} octets ({})",
                                             line_number_, kMaxLineOctets, line_length_)));
        }
        record += '\n';
        record += line_;
        fields = split_csv(record);
      }
    }
    if (!fields) return std::unexpected(reject(first_line, "text after a closing quote"));
    if (fields->size() <= email_column_) {
      return std::unexpected(
          reject(first_line, fmt::format("row has {} fields; 'email' is field {}", fields->size(),
                                         email_column_ + 1)));
    }
    return accept((*fields)[email_column_], first_line);
  }
  return end_of_input();
}

std::optional<RecipientRecord> RecipientsFile::next_json() {
  while (read_line(line_)) {
    if (line_too_long()) return std::unexpected(too_long(line_number_));
    if (trim(line_).empty()) continue;
    auto doc = nlohmann::json::parse(line_, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return std::unexpected(reject(line_number_, "invalid JSON"));
    if (!doc.is_object()) return std::unexpected(reject(line_number_, "not a JSON object"));
    auto email = doc.find("email");
    if (email == doc.end()) return std::unexpected(reject(line_number_, "no \"email\" field"));
    if (!email->is_string()) {
      return std::unexpected(reject(line_number_, "\"email\" is not a string"));
    }
    return accept(email->get_ref<const std::string&>(), line_number_);
  }
  return end_of_input();
}

std::expected<uint64_t, std::string> count_record_lines(const std::string& path,
                                                        RecipientsFormat format) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return std::unexpected(
        fmt::format("cannot read recipients file '{}': {}", path, std::strerror(errno)));
  }
  auto buffer = std::make_unique<char[]>(1 << 20);
  uint64_t records = 0;
  bool content = false;  // the current line has a non-blank character
  bool comment = false;  // ... and the first one is '#'
  bool at_start = true;
  while (true) {
    ssize_t n = ::read(fd, buffer.get(), 1 << 20);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return std::unexpected(
          fmt::format("cannot read recipients file '{}': {}", path, std::strerror(err)));
    }
    if (n == 0) break;
    const char* begin = buffer.get();
    if (at_start) {
      at_start = false;
      // A byte order mark is not content (a regular file's first read has all 3 octets).
      if (std::string_view(begin, static_cast<size_t>(n)).starts_with(kUtf8Bom))
        begin += kUtf8Bom.size();
    }
    for (const char* p = begin; p != buffer.get() + n; ++p) {
      char c = *p;
      if (c == '\n') {
        if (content && !(comment && format == RecipientsFormat::kText)) ++records;
        content = comment = false;
      } else if (!content && c != ' ' && c != '\t' && c != '\r') {
        content = true;
        comment = c == '#';
      }
    }
  }
  ::close(fd);
  if (content && !(comment && format == RecipientsFormat::kText)) ++records;
  if (format == RecipientsFormat::kCsv && records > 0) --records;  // the header row
  return records;
}

}  // namespace ringmail::app

// Streams recipients from a file one record at a time, so a million-line list is never held
// in memory: plain text (one address a line), CSV with an `email` column, or JSON Lines.
// Lines are capped in length and an address repeated within the file is handed out once.
#pragma once

#include <cstdint>
#include <expected>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::app {

enum class RecipientsFormat {
  kText,       // one address a line; blank lines and lines starting with '#' skipped
  kCsv,        // RFC 4180; a header row (after any blank or # lines) names the `email` column
  kJsonLines,  // one JSON object a line with an "email" string
};

const char* to_string(RecipientsFormat format);

struct Recipient {
  std::string address;  // as written (validated by validate_mailbox)
  std::string domain;   // lower-cased; the routing key
  uint64_t line = 0;    // 1-based line where its record starts
};

// A record that could not be used. The run goes on without it.
struct RejectedLine {
  enum class Kind {
    kRefused,    // the line is wrong: counted as refused, it fails the enqueue or send
    kDuplicate,  // the address was already read from this file: skipped, counted apart
  };
  std::string file;
  uint64_t line = 0;
  std::string reason;
  Kind kind = Kind::kRefused;

  std::string to_string() const;  // "path:LINE: reason"
  bool duplicate() const { return kind == Kind::kDuplicate; }
};

using RecipientRecord = std::expected<Recipient, RejectedLine>;

// The addresses read from one file so far, each with the line it was first on: an
// open-addressing table of 16-octet slots (hash and position) over an append-only arena
// of 1 MiB blocks holding each entry (line, length, text). About 70 octets an address
// of 25 (measured: 68 MB for a million), one cache miss a lookup, no allocation per entry.
class SeenAddresses {
 public:
  // The line `address` (compared octet for octet) was first added with, or nullopt after
  // adding it with `line`.
  std::optional<uint64_t> find_or_add(std::string_view address, uint64_t line);
  size_t size() const { return count_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint64_t at = 0;  // 0: empty; else 1 + the entry's position in the arena
  };
  static constexpr size_t kBlockOctets = size_t{1} << 20;
  std::string_view text_at(uint64_t at) const;
  uint64_t line_at(uint64_t at) const;
  uint64_t append(std::string_view address, uint64_t line);
  void grow();

  std::vector<Slot> slots_;  // a power of two in size, at most 3/4 full
  std::vector<std::unique_ptr<char[]>> blocks_;
  size_t block_used_ = kBlockOctets;  // of the last block: a first append opens one
  size_t count_ = 0;
};

class RecipientsFile {
 public:
  // Opens `path` and picks the format from its extension (.txt, .csv, .jsonl, .ndjson) or,
  // for any other name, from its first record: '{' means JSON Lines, a header holding an
  // `email` field means CSV, anything else plain text. Fails when the file cannot be read,
  // or is CSV without an `email` column.
  static std::expected<RecipientsFile, std::string> open(const std::string& path);
  static std::expected<RecipientsFile, std::string> open(const std::string& path,
                                                         RecipientsFormat format);

  // Longest line read, without its line ending. The longest valid address is 254 octets;
  // CSV and JSON rows may carry other fields. A longer line is refused and skipped to its
  // end without being held in memory.
  static constexpr size_t kMaxLineOctets = 64 * 1024;

  // The next recipient, or a refused record and why; nullopt at the end of the file. A read
  // error is reported once as a refused record, then the file counts as ended. An address
  // already handed out (compared lower-cased) is skipped and counted in duplicates(); with
  // report_duplicates(true) each is handed out as a RejectedLine of kind kDuplicate
  // ("duplicate of line M") instead.
  std::optional<RecipientRecord> next();

  // True when the file holds no record at all: only blank lines, comments, a byte order
  // mark, or a CSV header. Reads ahead one record (kept for next()), so a pipe works too.
  bool has_no_records();

  void report_duplicates(bool on) { report_duplicates_ = on; }
  uint64_t duplicates() const { return duplicates_; }

  RecipientsFormat format() const { return format_; }
  const std::string& path() const { return path_; }

 private:
  RecipientsFile(std::string path, std::ifstream in) : path_(std::move(path)), in_(std::move(in)) {}
  static std::expected<RecipientsFile, std::string> open_as(const std::string& path,
                                                            std::optional<RecipientsFormat> format);

  // One line from the stream, without CR LF / LF and without a leading UTF-8 BOM; of a line
  // longer than kMaxLineOctets only the first kMaxLineOctets are kept. Sets
  // physical_length_ to the whole line's length.
  bool read_physical_line(std::string& line);
  // One line, replayed ones first; counts line_number_ and sets line_length_. False at the
  // end or on error.
  bool read_line(std::string& line);
  bool line_too_long() const { return line_length_ > kMaxLineOctets; }
  RejectedLine too_long(uint64_t line) const;
  std::expected<void, std::string> start(std::optional<RecipientsFormat> format);
  RecipientRecord accept(std::string_view address, uint64_t line) const;
  RejectedLine reject(uint64_t line, std::string reason) const;
  std::optional<RecipientRecord> end_of_input();
  // The next record before duplicates are looked for: the peeked one first.
  std::optional<RecipientRecord> next_record();
  std::optional<RecipientRecord> next_text();
  std::optional<RecipientRecord> next_csv();
  std::optional<RecipientRecord> next_json();

  std::string path_;
  std::ifstream in_;
  RecipientsFormat format_ = RecipientsFormat::kText;
  uint64_t line_number_ = 0;  // of the last line read
  // Lines read while choosing the format, handed out again before reading on; this keeps
  // the reader usable on pipes, which cannot seek back.
  struct ReplayedLine {
    std::string text;
    uint64_t length = 0;  // of the whole line (text may be cut at kMaxLineOctets)
  };
  std::vector<ReplayedLine> replay_;
  size_t replay_next_ = 0;
  size_t email_column_ = 0;  // CSV only
  uint64_t physical_lines_ = 0;
  uint64_t physical_length_ = 0;  // of the last physical line read
  uint64_t line_length_ = 0;      // of the last line read_line() returned
  // Every address handed out, lower-cased: the price of not sending anyone the message
  // twice is about 70 octets an address (see SeenAddresses).
  SeenAddresses seen_;
  std::string lowered_;  // reused for each address looked up
  uint64_t duplicates_ = 0;
  bool report_duplicates_ = false;
  std::optional<std::optional<RecipientRecord>> peeked_;  // by has_no_records()
  bool read_failed_ = false;
  bool read_error_reported_ = false;
  std::string line_;  // reused for every line, so reading allocates only for long lines
};

// Counts the lines that can hold a record (not blank, not a '#' comment for text; minus the
// header row for CSV): one fast pass at start-up so progress can show a total and an ETA.
// Approximate when CSV fields span lines.
std::expected<uint64_t, std::string> count_record_lines(const std::string& path,
                                                        RecipientsFormat format);

}  // namespace ringmail::app

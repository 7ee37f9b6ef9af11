// Streams recipients from a file one record at a time, so a million-line list is never held
// in memory: plain text (one address a line), CSV with an `email` column, or JSON Lines.
#pragma once

#include <cstdint>
#include <expected>
#include <fstream>
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
  std::string file;
  uint64_t line = 0;
  std::string reason;

  std::string to_string() const;  // "path:LINE: reason"
};

using RecipientRecord = std::expected<Recipient, RejectedLine>;

class RecipientsFile {
 public:
  // Opens `path` and picks the format from its extension (.txt, .csv, .jsonl, .ndjson) or,
  // for any other name, from its first record: '{' means JSON Lines, a header holding an
  // `email` field means CSV, anything else plain text. Fails when the file cannot be read,
  // or is CSV without an `email` column.
  static std::expected<RecipientsFile, std::string> open(const std::string& path);
  static std::expected<RecipientsFile, std::string> open(const std::string& path,
                                                         RecipientsFormat format);

  // The next recipient, or a refused record and why; nullopt at the end of the file. A read
  // error is reported once as a refused record, then the file counts as ended.
  std::optional<RecipientRecord> next();

  RecipientsFormat format() const { return format_; }
  const std::string& path() const { return path_; }

 private:
  RecipientsFile(std::string path, std::ifstream in) : path_(std::move(path)), in_(std::move(in)) {}
  static std::expected<RecipientsFile, std::string> open_as(const std::string& path,
                                                            std::optional<RecipientsFormat> format);

  // One line from the stream, without CR LF / LF and without a leading UTF-8 BOM.
  bool read_physical_line(std::string& line);
  // One line, replayed ones first; counts line_number_. False at the end or on error.
  bool read_line(std::string& line);
  std::expected<void, std::string> start(std::optional<RecipientsFormat> format);
  RecipientRecord accept(std::string_view address, uint64_t line) const;
  RejectedLine reject(uint64_t line, std::string reason) const;
  std::optional<RecipientRecord> end_of_input();
  std::optional<RecipientRecord> next_text();
  std::optional<RecipientRecord> next_csv();
  std::optional<RecipientRecord> next_json();

  std::string path_;
  std::ifstream in_;
  RecipientsFormat format_ = RecipientsFormat::kText;
  uint64_t line_number_ = 0;  // of the last line read
  // Lines read while choosing the format, handed out again before reading on; this keeps
  // the reader usable on pipes, which cannot seek back.
  std::vector<std::string> replay_;
  size_t replay_next_ = 0;
  size_t email_column_ = 0;  // CSV only
  uint64_t physical_lines_ = 0;
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

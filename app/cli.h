// The `ringmail` command line: the options of `ringmail send` as given, and how they
// override the config file.
#pragma once

#include <expected>
#include <optional>
#include <ostream>
#include <string>

#include "app/config.h"

namespace ringmail::app {

enum class SummaryFormat { kText, kJson };

// Options left unset (nullopt) keep the config file's value or its default.
struct SendFlags {
  std::string message_path;
  std::string recipients_path;
  std::optional<std::string> config_path;
  std::optional<std::string> relay;
  std::optional<std::string> from;
  std::optional<std::string> helo;
  std::optional<unsigned> connections;
  std::optional<unsigned> recipients_per_transaction;
  std::optional<unsigned> shards;
  std::optional<unsigned> max_messages_per_connection;
  std::optional<double> drain_timeout_s;
  std::optional<double> messages_per_second;
  bool no_pipelining = false;
  bool quiet = false;
  SummaryFormat summary = SummaryFormat::kText;
};

// Parses argv. Returns the flags of `send`, or the exit status when the command line alone
// settles the run: 0 after --help or --version, 2 after a usage error (the message and
// help go to `out` / `err`).
std::expected<SendFlags, int> parse_command_line(int argc, const char* const* argv,
                                                 std::ostream& out, std::ostream& err);

// Writes every flag that was given over the config's value.
void apply_flags(const SendFlags& flags, Config& config);

}  // namespace ringmail::app

// ringmail's settings: one TOML file mapped onto engine::EngineOptions plus what `send`
// needs (relay, sender, progress display). Command-line flags override it (cli.h).
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine_options.h"

namespace ringmail::app {

enum class ProgressMode {
  kAuto,  // a live bar when stderr is a terminal, else a plain line every `interval`
  kBar,
  kPlain,
  kOff,
};

struct ProgressSettings {
  ProgressMode mode = ProgressMode::kAuto;
  engine::Seconds plain_interval{5};  // between plain lines
};

struct Config {
  engine::EngineOptions engine;
  std::string relay;  // "host:port" or "[v6]:port"; no default
  std::string from;   // envelope sender; no default
  ProgressSettings progress;
};

// Accepted ranges, shared by the config file and the command line.
struct Limits {
  static constexpr unsigned kMaxShards = 1024;
  static constexpr unsigned kMaxConnections = 100000;
  static constexpr unsigned kMaxMessagesPerConnection = 100000000;
  static constexpr unsigned kMaxRecipientsPerTransaction = 100000;
  static constexpr double kMaxSeconds = 7 * 24 * 3600;
  static constexpr double kMaxRate = 1e9;
};

// Parses TOML text. Unknown tables or keys, wrong types and values out of range are errors
// "SOURCE:LINE: ..." naming the key. Keys left out keep their defaults.
std::expected<Config, std::string> parse_config(std::string_view toml_text,
                                                std::string_view source_name);

// Reads and parses a config file; errors name the file.
std::expected<Config, std::string> load_config_file(const std::string& path);

// Every key the file accepts, "table.key", in documentation order.
std::vector<std::string> config_keys();

// Checks what no single key can: a relay and a valid sender are present, the EHLO name is
// a domain or address literal. Run after the flags have been applied.
std::expected<void, std::string> validate_for_send(const Config& config);

const char* to_string(ProgressMode mode);

}  // namespace ringmail::app

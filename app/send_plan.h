// Everything `ringmail send` checks and loads before the engine starts, so a bad flag,
// config, relay, message or recipients file stops the run (exit 2) before anything is sent.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>

#include "app/cli.h"
#include "app/config.h"
#include "app/recipients_file.h"
#include "engine/destination.h"
#include "engine/seams.h"
#include "smtp/transaction.h"

namespace ringmail::app {

struct SendPlan {
  Config config;              // the config file with the flags applied
  // Where each recipient goes: [routes], the relay, or MX (names resolved already).
  std::unique_ptr<engine::RouteResolver> resolver;
  smtp::EncodedBody body;     // the message, completed and encoded once
  RecipientsFile recipients;  // opened, format chosen, CSV header read
  // From count_record_lines(); nullopt when the file is not a regular file (a pipe).
  std::optional<uint64_t> estimated_total;
};

// Loads the config (when given), applies the flags, validates the sender and EHLO name,
// resolves the relay (blocking getaddrinfo), loads the message and opens the recipients.
// The error is one line for stderr.
std::expected<SendPlan, std::string> prepare_send(const SendFlags& flags);

// The Message-ID domain: the EHLO name when it is a real domain (has a dot, not an address
// literal), else the sender's domain.
std::string message_id_domain(const Config& config);

}  // namespace ringmail::app

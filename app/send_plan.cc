#include "app/send_plan.h"

#include <sys/stat.h>

#include <iostream>

#include "app/message_file.h"
#include "app/relay.h"
#include "app/routing.h"

namespace ringmail::app {

std::string message_id_domain(const Config& config) {
  const std::string& helo = config.engine.helo_name;
  if (helo.find('.') != std::string::npos && !helo.starts_with('[')) return helo;
  return config.from.substr(config.from.rfind('@') + 1);
}

std::expected<SendPlan, std::string> prepare_send(const SendFlags& flags) {
  Config config;
  if (flags.config_path) {
    auto loaded = load_config_file(*flags.config_path);
    if (!loaded) return std::unexpected(loaded.error());
    config = std::move(*loaded);
  }
  apply_flags(flags, config);
  if (auto ok = validate_for_send(config); !ok) return std::unexpected(ok.error());

  if (auto ok = resolve_credentials(config); !ok) return std::unexpected(ok.error());
  auto resolver = make_route_resolver(config);  // routes' profiles start from the defaults
  if (!resolver) return std::unexpected(resolver.error());
  keep_credentials_out_of_core_dumps(config);
  if (auto warning = credentials_without_verify_warning(config))
    std::cerr << "ringmail: warning: " << *warning << '\n';

  auto body = load_message_file(flags.message_path, message_id_domain(config));
  if (!body) return std::unexpected(body.error());

  auto recipients = RecipientsFile::open(flags.recipients_path);
  if (!recipients) return std::unexpected(recipients.error());

  // The pre-count reads the file once more; only worth it (and only safe) for a regular
  // file, never for a pipe whose contents it would consume.
  std::optional<uint64_t> estimated_total;
  struct stat st {};
  if (::stat(flags.recipients_path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    auto counted = count_record_lines(flags.recipients_path, recipients->format());
    if (!counted) return std::unexpected(counted.error());
    estimated_total = *counted;
  }
  return SendPlan{std::move(config), std::move(*resolver), std::move(*body), std::move(*recipients),
                  estimated_total};
}

}  // namespace ringmail::app

#include "app/observability.h"

#include <iostream>
#include <thread>
#include <vector>

#include "app/engine_driver.h"

namespace ringmail::app {

std::expected<Observability, std::string> start_observability(const Config& config) {
  Observability o;
  const MetricsSettings& metrics_settings = config.metrics;
  o.sites.sites = config.engine.site_metrics.sites;
  o.sites.top = metrics_settings.top_sites;
  if (metrics_settings.enabled) {
    const std::string listen =
        metrics_settings.listen.value_or(std::string(metrics::kDefaultListen));
    auto started = metrics::Exporter::start(listen);
    if (started) {
      o.exporter = std::move(*started);
    } else if (metrics_settings.listen) {
      return std::unexpected(started.error());
    } else {
      // The default address is often taken by another run on the same host: this run
      // goes on unwatched rather than not at all.
      std::cerr << "ringmail: warning: " << started.error()
                << " (metrics off for this run; --metrics-listen picks another address)\n";
    }
  }
  if (!config.log.file.empty()) {
    metrics::OutcomeLogOptions log_options;
    log_options.format = config.log.format == OutcomeLogFormat::kJson ? metrics::LogFormat::kJson
                                                                      : metrics::LogFormat::kLogfmt;
    log_options.shards = config.engine.shards != 0
                             ? config.engine.shards
                             : std::max(1u, std::thread::hardware_concurrency());
    auto opened = metrics::OutcomeLogger::open(config.log.file, log_options);
    if (!opened) return std::unexpected(opened.error());
    o.outcome_log = std::move(*opened);
  }
  return o;
}

void Observability::expose(metrics::EngineSampler sampler,
                           std::vector<metrics::FamilyProvider> extra) {
  if (!exporter) return;
  std::vector<metrics::FamilyProvider> providers;
  if (outcome_log) providers.push_back(outcome_log->metrics_provider());
  for (metrics::FamilyProvider& p : extra) providers.push_back(std::move(p));
  exporter->expose(
      std::make_shared<metrics::RingmailCollector>(std::move(sampler), std::move(providers), sites));
}

void reopen_log_on_hangup(StopSignals& signals, Observability& observability) {
  signals.on_hangup([log = observability.outcome_log.get()] {
    if (log) log->reopen();
  });
}

}  // namespace ringmail::app

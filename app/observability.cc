#include "app/observability.h"

#include <chrono>
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
      // The default address is often taken by another run on the same host (a `send`):
      // this run goes on unwatched rather than not at all, and binds once that run ends,
      // so a service started meanwhile is not left unwatched for as long as it lives.
      std::cerr << "ringmail: warning: " << started.error()
                << " (metrics off until it is free: tried again every 10 s; "
                   "--metrics-listen picks another address)\n";
      o.late_exporter = std::make_unique<metrics::LateExporter>(
          listen, std::chrono::seconds(10), [](const std::string& address) {
            std::cerr << "ringmail: serving metrics at http://" << address
                      << metrics::kMetricsPath << " now that it is free\n";
          });
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
  if (!exporter && !late_exporter) return;
  std::vector<metrics::FamilyProvider> providers;
  if (outcome_log) providers.push_back(outcome_log->metrics_provider());
  for (metrics::FamilyProvider& p : extra) providers.push_back(std::move(p));
  auto collector =
      std::make_shared<metrics::RingmailCollector>(std::move(sampler), std::move(providers), sites);
  if (exporter) exporter->expose(std::move(collector));
  else late_exporter->expose(std::move(collector));
}

void reopen_log_on_hangup(StopSignals& signals, Observability& observability) {
  signals.on_hangup([log = observability.outcome_log.get()] {
    if (log) log->reopen();
  });
}

}  // namespace ringmail::app

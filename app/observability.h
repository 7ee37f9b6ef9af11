// What watches a run from outside: the Prometheus exporter and the structured outcome log,
// started from the config the same way by `send` and `run`.
#pragma once

#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "app/config.h"
#include "metrics/delivery_collector.h"
#include "metrics/exporter.h"
#include "metrics/late_exporter.h"
#include "metrics/outcome_log.h"

namespace ringmail::app {

struct Observability {
  std::unique_ptr<metrics::OutcomeLogger> outcome_log;  // null: no outcome log
  std::unique_ptr<metrics::Exporter> exporter;           // null: metrics off
  // The default address was taken at start-up: bound later, when it is free.
  std::unique_ptr<metrics::LateExporter> late_exporter;
  metrics::SiteLabelOptions sites;                       // which sites get their own label

  // Serving /metrics now (a late exporter once it is bound).
  bool serving_metrics() const { return exporter || (late_exporter && late_exporter->bound()); }
  // The late exporter (its retry thread) first, then the exporter.
  void stop_exporters() {
    late_exporter.reset();
    exporter.reset();
  }

  // Serves `sampler` (and the outcome log's own counters, then `extra`'s families, e.g.
  // metrics::storage_provider) at /metrics. Call once the engine can be sampled (after
  // Engine::start); a no-op when metrics are off. What `extra` samples must outlive the
  // exporter (StopExporterFirst).
  void expose(metrics::EngineSampler sampler, std::vector<metrics::FamilyProvider> extra = {});
};

// Hands every finished transaction and destination state to two sinks (the database and
// the outcome log).
class FanOutSink final : public engine::OutcomeSink {
 public:
  FanOutSink(engine::OutcomeSink* first, engine::OutcomeSink* second) : first_(first), second_(second) {}
  void on_transaction_finished(unsigned shard, const smtp::TransactionOutcome& outcome) override {
    if (first_) first_->on_transaction_finished(shard, outcome);
    if (second_) second_->on_transaction_finished(shard, outcome);
  }
  void on_destination_state(unsigned shard, const engine::DestinationStateChange& change) override {
    if (first_) first_->on_destination_state(shard, change);
    if (second_) second_->on_destination_state(shard, change);
  }

 private:
  engine::OutcomeSink* first_;
  engine::OutcomeSink* second_;
};

// Stops the exporter when it goes out of scope. Declare it after the engine the exporter
// samples, so scraping ends before that engine is destroyed.
struct StopExporterFirst {
  Observability& observability;
  ~StopExporterFirst() { observability.stop_exporters(); }
};

// Starts what the config asks for. An address that was given but cannot be bound, or an
// outcome log that cannot be opened, is an error (exit 2, nothing sent); the default
// metrics address being taken is only a warning on stderr, and it is tried again every
// 10 s (a line says when it is bound).
std::expected<Observability, std::string> start_observability(const Config& config);

// SIGHUP (logrotate's postrotate) reopens the outcome log, if there is one. `observability`
// must outlive every wait on `signals`.
class StopSignals;
void reopen_log_on_hangup(StopSignals& signals, Observability& observability);

}  // namespace ringmail::app

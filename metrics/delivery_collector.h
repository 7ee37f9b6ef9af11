// The one prometheus-cpp Collectable of ringmail: at scrape time it takes a snapshot of
// the engine (per-shard plain counters, summed) and turns it into metric families. No
// prometheus-cpp object is touched on a shard thread, and there is no global registry.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "engine/delivery_counters.h"

namespace ringmail::metrics {

// What one scrape reads from a running engine.
struct EngineSample {
  engine::DeliverySnapshot delivery;
  uint64_t recipients_taken = 0;  // taken from the job source by the feeder
  unsigned shards = 0;
};

// Called on the exposer's HTTP thread at every scrape; must be thread-safe and cheap
// (Engine::snapshot() is: it sums relaxed atomics).
using EngineSampler = std::function<EngineSample()>;

// An extension point for modules with their own counters (DNS, TLS, storage, the outcome
// log): called at every scrape on the HTTP thread, it appends its families to `out`.
// Same rules as EngineSampler: thread-safe, no blocking, bounded label values.
using FamilyProvider = std::function<void(std::vector<prometheus::MetricFamily>& out)>;

// The engine's families for one sample (ringmail_recipients_total, ...). Pure: the unit
// test feeds it a snapshot and reads the text exposition.
std::vector<prometheus::MetricFamily> engine_families(const EngineSample& sample);

// Which destination sites get a label value of their own in ringmail_site_*.
struct SiteLabelOptions {
  std::vector<std::string> sites{};  // configured ([metrics] sites): always exported, any case
  size_t top = 10;                 // plus the sites with the most recipients
  // A site once exported keeps its series (a vanished series looks like a reset), so the
  // names beyond the configured ones grow; at most this many (0: 2 * top).
  size_t max_named = 0;
};

// ringmail_site_recipients_total{site,outcome} and ringmail_site_connection_failures_total
// {site}: configured sites and the top `top` others by name, the rest as site="other".
// Stateful, so that every series stays monotonic: a site promoted out of "other" after the
// first scrape starts from 0 and what it had stays in "other". Thread-safe.
class SiteSeries {
 public:
  explicit SiteSeries(SiteLabelOptions options);
  std::vector<prometheus::MetricFamily> families(const engine::DeliverySnapshot& delivery);

 private:
  struct Named {
    engine::SiteCounts offset;  // what "other" had exposed of it when promoted; stays there
  };
  std::mutex mutex_;
  SiteLabelOptions options_;
  std::vector<std::string> configured_;  // lower case, sorted, unique
  std::map<std::string, Named> promoted_;  // names exported besides the configured ones
  // What each site not exported by name contributed to "other" at the last scrape: a site
  // promoted now keeps exactly that in "other" (so "other" never goes down) and starts
  // its own series from the rest (so what came since is not lost to "other").
  std::map<std::string, engine::SiteCounts> in_other_;
};

// ringmail_build_info{version="..."} 1.
prometheus::MetricFamily build_info_family(const std::string& version);

// The version compiled into this library (the CMake project version).
const char* build_version();

class RingmailCollector final : public prometheus::Collectable {
 public:
  // `sampler` is called at every scrape. Providers are called after it, in order.
  explicit RingmailCollector(EngineSampler sampler, std::vector<FamilyProvider> providers = {},
                             SiteLabelOptions sites = {});
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  EngineSampler sampler_;
  std::vector<FamilyProvider> providers_;
  mutable SiteSeries site_series_;  // remembers what earlier scrapes exported
};

// Small builders for providers: an empty family, a sample added to one (a counter's or a
// gauge's value, by the family's type), or a family of one unlabelled sample.
prometheus::MetricFamily family(std::string name, std::string help, prometheus::MetricType type);
void add_sample(prometheus::MetricFamily& f, double value,
                std::vector<prometheus::ClientMetric::Label> labels = {});
prometheus::MetricFamily counter_family(std::string name, std::string help, double value);
prometheus::MetricFamily gauge_family(std::string name, std::string help, double value);

}  // namespace ringmail::metrics

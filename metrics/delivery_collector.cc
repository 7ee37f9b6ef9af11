#include "metrics/delivery_collector.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <utility>

#ifndef RINGMAIL_VERSION
#define RINGMAIL_VERSION "unknown"
#endif

namespace ringmail::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Recipients by the class of the reply that decided them. Code 0 is an outcome made
// locally (connection lost, timeout, dead destination); 1xx and 3xx never decide one,
// but a misbehaving server could send them, so they have their own bounded value.
MetricFamily reply_classes(const engine::DeliverySnapshot& d) {
  uint64_t local = d.recipients_by_reply_code[0], c2 = 0, c4 = 0, c5 = 0, other = 0;
  for (size_t code = 1; code < d.recipients_by_reply_code.size(); ++code) {
    const uint64_t n = d.recipients_by_reply_code[code];
    if (code >= 200 && code < 300) c2 += n;
    else if (code >= 400 && code < 500) c4 += n;
    else if (code >= 500 && code < 600) c5 += n;
    else other += n;
  }
  MetricFamily f = family("ringmail_smtp_replies_total",
                          "Recipients by the class of the SMTP reply that decided them; "
                          "local: decided without a server reply (connection lost, timeout)",
                          MetricType::Counter);
  add_sample(f, double(c2), {{"class", "2xx"}});
  add_sample(f, double(c4), {{"class", "4xx"}});
  add_sample(f, double(c5), {{"class", "5xx"}});
  add_sample(f, double(local), {{"class", "local"}});
  add_sample(f, double(other), {{"class", "other"}});
  return f;
}

MetricFamily enhanced_classes(const engine::DeliverySnapshot& d) {
  MetricFamily f = family("ringmail_smtp_enhanced_status_total",
                          "Recipients by the class of the RFC 3463 enhanced status code that "
                          "decided them; none: the reply had no enhanced code",
                          MetricType::Counter);
  const auto& e = d.recipients_by_enhanced_class;
  add_sample(f, double(e[2]), {{"class", "2"}});
  add_sample(f, double(e[4]), {{"class", "4"}});
  add_sample(f, double(e[5]), {{"class", "5"}});
  add_sample(f, double(e[0] + e[1] + e[3]), {{"class", "none"}});
  return f;
}

MetricFamily connection_failure_reasons(const engine::DeliverySnapshot& d) {
  MetricFamily f = family("ringmail_connection_failures_by_reason_total",
                          "SMTP connections that failed before greeting and EHLO completed, by "
                          "reason (they sum to ringmail_connection_failures_total)",
                          MetricType::Counter);
  for (size_t i = 0; i < engine::kConnectionFailureReasons; ++i)
    add_sample(f, double(d.connection_failures_by_reason[i]),
               {{"reason", engine::to_string(engine::ConnectionFailure(i))}});
  return f;
}

MetricFamily duration_histogram(std::string name, std::string help, const engine::DurationHistogram& h) {
  MetricFamily f = family(std::move(name), std::move(help), MetricType::Histogram);
  ClientMetric m;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < engine::kTransactionDurationBounds.size(); ++i) {
    cumulative += h.buckets[i];
    m.histogram.bucket.push_back({cumulative, engine::kTransactionDurationBounds[i]});
  }
  cumulative += h.buckets.back();
  m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  m.histogram.sample_count = cumulative;  // equal to the +Inf bucket by construction
  m.histogram.sample_sum = h.sum_seconds;
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

const char* build_version() { return RINGMAIL_VERSION; }

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void add_sample(MetricFamily& f, double value, std::vector<ClientMetric::Label> labels) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

MetricFamily counter_family(std::string name, std::string help, double value) {
  MetricFamily f = family(std::move(name), std::move(help), MetricType::Counter);
  add_sample(f, value);
  return f;
}

MetricFamily gauge_family(std::string name, std::string help, double value) {
  MetricFamily f = family(std::move(name), std::move(help), MetricType::Gauge);
  add_sample(f, value);
  return f;
}

MetricFamily build_info_family(const std::string& version) {
  MetricFamily f = family("ringmail_build_info", "Always 1; the labels say which build runs",
                          MetricType::Gauge);
  add_sample(f, 1, {{"version", version}});
  return f;
}

std::vector<MetricFamily> engine_families(const EngineSample& sample) {
  const engine::DeliverySnapshot& d = sample.delivery;
  std::vector<MetricFamily> out;

  MetricFamily recipients = family(
      "ringmail_recipients_total",
      "Recipients by final outcome of their attempt: delivered (2xx), deferred (4xx or a "
      "local failure), bounced (5xx), not_attempted (dropped at shutdown before any attempt)",
      MetricType::Counter);
  add_sample(recipients, double(d.recipients_delivered), {{"outcome", "delivered"}});
  add_sample(recipients, double(d.recipients_deferred), {{"outcome", "deferred"}});
  add_sample(recipients, double(d.recipients_bounced), {{"outcome", "bounced"}});
  add_sample(recipients, double(d.recipients_not_attempted), {{"outcome", "not_attempted"}});
  out.push_back(std::move(recipients));
  // Apart from ringmail_recipients_total, whose outcomes each recipient reaches once: a
  // recipient parked now is taken again later and gets its outcome then.
  out.push_back(counter_family("ringmail_recipients_parked_total",
                               "Recipients given back unsent because their destination had a "
                               "backlog ([pool] max_backlog); the queue offers them again",
                               double(d.recipients_parked)));

  out.push_back(counter_family("ringmail_recipients_taken_total",
                               "Recipients the engine took from its source (file or queue)",
                               double(sample.recipients_taken)));
  const uint64_t finished = d.recipients_accounted();
  out.push_back(gauge_family(
      "ringmail_recipients_in_flight",
      "Recipients taken and not yet finished: queued on a shard or in an SMTP transaction",
      double(sample.recipients_taken > finished ? sample.recipients_taken - finished : 0)));

  out.push_back(counter_family("ringmail_messages_total",
                               "SMTP transactions (messages) finished, whatever their outcome",
                               double(d.transactions_finished)));
  out.push_back(counter_family("ringmail_messages_delivered_total",
                               "SMTP transactions in which at least one recipient was delivered",
                               double(d.transactions_delivered)));
  out.push_back(reply_classes(d));
  out.push_back(enhanced_classes(d));

  out.push_back(counter_family("ringmail_connections_opened_total",
                               "SMTP connections opened (connect submitted)",
                               double(d.connections_opened)));
  out.push_back(counter_family(
      "ringmail_connection_failures_total",
      "SMTP connections that failed before greeting and EHLO completed (refused, timed out, "
      "greeting or EHLO refused)",
      double(d.connection_failures)));
  out.push_back(gauge_family(
      "ringmail_connections_open", "SMTP connections connecting, open or closing right now",
      double(d.connections_opened > d.connections_closed ? d.connections_opened - d.connections_closed
                                                          : 0)));
  out.push_back(gauge_family(
      "ringmail_destination_pools",
      "Destination pools the shards hold now (made at a destination's first use, forgotten "
      "after 30-60 s unused)",
      double(d.destination_pools)));
  out.push_back(duration_histogram("ringmail_transaction_duration_seconds",
                                   "Time from a shard taking an SMTP transaction off its inbox to "
                                   "the transaction's outcome (queueing on the pool, connecting, "
                                   "sending, the server's reply)",
                                   d.transaction_duration));
  out.push_back(connection_failure_reasons(d));

  out.push_back(counter_family("ringmail_ring_submissions_total",
                               "io_uring submission queue entries taken by the kernel, all shards",
                               double(d.ring_submissions)));
  out.push_back(counter_family("ringmail_ring_completions_total",
                               "io_uring completion queue entries reaped, all shards",
                               double(d.ring_completions)));
  MetricFamily handshakes = family("ringmail_tls_handshakes_total",
                                   "TLS handshakes completed, by whether a cached session was resumed",
                                   MetricType::Counter);
  add_sample(handshakes, double(d.tls_handshakes - d.tls_handshakes_resumed), {{"resumed", "false"}});
  add_sample(handshakes, double(d.tls_handshakes_resumed), {{"resumed", "true"}});
  out.push_back(std::move(handshakes));
  out.push_back(counter_family("ringmail_tls_failures_total", "TLS handshakes that failed",
                               double(d.tls_failures)));
  out.push_back(counter_family("ringmail_dns_lookups_total",
                               "MX routes looked up in DNS (route cache misses)", double(d.dns_lookups)));
  out.push_back(counter_family("ringmail_dns_cache_hits_total",
                               "MX routes answered from the cache or a lookup already in flight",
                               double(d.dns_cache_hits)));
  out.push_back(counter_family("ringmail_dns_failures_total",
                               "MX lookups that ended in a temporary failure (SERVFAIL, timeout)",
                               double(d.dns_failures)));
  out.push_back(duration_histogram("ringmail_dns_lookup_duration_seconds",
                                   "MX route lookups that went to DNS, from the first query to the "
                                   "route (MX and exchanger addresses); cache hits not included",
                                   d.dns_lookup_duration));
  out.push_back(gauge_family("ringmail_shards", "Engine shards (threads with one io_uring each)",
                             double(sample.shards)));
  return out;
}

namespace {

std::string lower(std::string_view name) {
  std::string out(name);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

engine::SiteCounts minus(engine::SiteCounts a, const engine::SiteCounts& b) {
  for (size_t i = 0; i < a.recipients.size(); ++i)
    a.recipients[i] = a.recipients[i] > b.recipients[i] ? a.recipients[i] - b.recipients[i] : 0;
  a.connection_failures =
      a.connection_failures > b.connection_failures ? a.connection_failures - b.connection_failures : 0;
  return a;
}

constexpr const char* kOtherSite = "other";

}  // namespace

SiteSeries::SiteSeries(SiteLabelOptions options) : options_(std::move(options)) {
  if (options_.max_named == 0) options_.max_named = 2 * options_.top;
  for (const std::string& site : options_.sites) {
    std::string name = lower(site);
    if (!name.empty() && name != kOtherSite) configured_.push_back(std::move(name));
  }
  std::sort(configured_.begin(), configured_.end());
  configured_.erase(std::unique(configured_.begin(), configured_.end()), configured_.end());
}

std::vector<MetricFamily> SiteSeries::families(const engine::DeliverySnapshot& d) {
  std::lock_guard lock(mutex_);
  auto is_configured = [&](const std::string& name) {
    return std::binary_search(configured_.begin(), configured_.end(), name);
  };
  // Promote the busiest sites not named yet, while there is room.
  if (promoted_.size() < options_.max_named && options_.top > 0) {
    std::vector<const engine::SiteSample*> candidates;
    for (const engine::SiteSample& s : d.sites)
      if ((s.counts.recipients_total() != 0 || s.counts.connection_failures != 0) &&
          s.name != kOtherSite && !is_configured(s.name))
        candidates.push_back(&s);
    const size_t top = std::min(options_.top, candidates.size());
    std::partial_sort(candidates.begin(), candidates.begin() + top, candidates.end(),
                      [](const engine::SiteSample* a, const engine::SiteSample* b) {
                        const uint64_t ra = a->counts.recipients_total(), rb = b->counts.recipients_total();
                        if (ra != rb) return ra > rb;
                        if (a->counts.connection_failures != b->counts.connection_failures)
                          return a->counts.connection_failures > b->counts.connection_failures;
                        return a->name < b->name;
                      });
    for (size_t i = 0; i < top && promoted_.size() < options_.max_named; ++i) {
      const std::string& name = candidates[i]->name;
      if (promoted_.contains(name)) continue;
      auto exposed = in_other_.find(name);  // none before its first scrape: starts whole
      promoted_.emplace(name, Named{exposed == in_other_.end() ? engine::SiteCounts{}
                                                                : exposed->second});
      if (exposed != in_other_.end()) in_other_.erase(exposed);
    }
  }

  // The snapshot's sites are sorted by name.
  auto counts_of = [&](const std::string& name) {
    auto it = std::lower_bound(d.sites.begin(), d.sites.end(), name,
                               [](const engine::SiteSample& s, const std::string& n) { return s.name < n; });
    return it != d.sites.end() && it->name == name ? it->counts : engine::SiteCounts{};
  };
  std::vector<std::pair<std::string_view, engine::SiteCounts>> named;
  for (const std::string& name : configured_) named.emplace_back(name, counts_of(name));
  engine::SiteCounts other = d.site_other;
  for (const auto& [name, promoted] : promoted_) {
    named.emplace_back(name, minus(counts_of(name), promoted.offset));
    other.add(promoted.offset);
  }
  for (const engine::SiteSample& s : d.sites)
    if (!is_configured(s.name) && !promoted_.contains(s.name)) {
      other.add(s.counts);
      in_other_[s.name] = s.counts;
    }
  named.emplace_back(kOtherSite, other);

  MetricFamily recipients = family(
      "ringmail_site_recipients_total",
      "Recipients by destination site (an MX domain or a relay) and outcome: configured sites "
      "and the busiest others; site=\"other\" holds the rest",
      MetricType::Counter);
  MetricFamily failures = family("ringmail_site_connection_failures_total",
                                 "SMTP connections that failed before EHLO completed, by "
                                 "destination site (as ringmail_site_recipients_total)",
                                 MetricType::Counter);
  static constexpr const char* kOutcomes[] = {"delivered", "deferred", "bounced"};
  for (const auto& [name, counts] : named) {
    for (size_t i = 0; i < counts.recipients.size(); ++i)
      add_sample(recipients, double(counts.recipients[i]),
                 {{"site", std::string(name)}, {"outcome", kOutcomes[i]}});
    add_sample(failures, double(counts.connection_failures), {{"site", std::string(name)}});
  }
  std::vector<MetricFamily> out;
  out.push_back(std::move(recipients));
  out.push_back(std::move(failures));
  return out;
}

RingmailCollector::RingmailCollector(EngineSampler sampler, std::vector<FamilyProvider> providers,
                                     SiteLabelOptions sites)
    : sampler_(std::move(sampler)), providers_(std::move(providers)), site_series_(std::move(sites)) {}

std::vector<MetricFamily> RingmailCollector::Collect() const {
  std::vector<MetricFamily> out;
  out.push_back(build_info_family(build_version()));
  if (sampler_) {
    const EngineSample sample = sampler_();
    std::vector<MetricFamily> engine = engine_families(sample);
    out.insert(out.end(), std::make_move_iterator(engine.begin()),
               std::make_move_iterator(engine.end()));
    std::vector<MetricFamily> sites = site_series_.families(sample.delivery);
    out.insert(out.end(), std::make_move_iterator(sites.begin()),
               std::make_move_iterator(sites.end()));
  }
  for (const FamilyProvider& provider : providers_) provider(out);
  return out;
}

}  // namespace ringmail::metrics

// The metrics of a run whose default address was taken at start-up (another run on the
// host serves 127.0.0.1:9464): binding is tried again in the background until it works,
// so a service started during someone's `ringmail send` is watched once that send ends
// instead of never.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <prometheus/collectable.h>

#include "metrics/exporter.h"

namespace ringmail::metrics {

class LateExporter {
 public:
  // Tries Exporter::start(address) every `interval` on a thread of its own; `on_bound` is
  // called on that thread once it succeeds (a line for the operator).
  LateExporter(std::string address, std::chrono::milliseconds interval,
               std::function<void(const std::string&)> on_bound);
  // Stops trying, then stops serving (a scrape in progress finishes first).
  ~LateExporter();
  LateExporter(const LateExporter&) = delete;
  LateExporter& operator=(const LateExporter&) = delete;

  // What to serve at /metrics, now or once bound; whatever it samples must outlive this
  // object (the same rule as Exporter::expose).
  void expose(std::shared_ptr<prometheus::Collectable> collectable);
  bool bound() const;

 private:
  void keep_trying();

  const std::string address_;
  const std::chrono::milliseconds interval_;
  const std::function<void(const std::string&)> on_bound_;
  mutable std::mutex mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::unique_ptr<Exporter> exporter_;  // null until bound
  std::thread thread_;                  // last: started once the rest is set
};

}  // namespace ringmail::metrics

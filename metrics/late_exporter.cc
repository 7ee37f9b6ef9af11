#include "metrics/late_exporter.h"

#include <sstream>

namespace ringmail::metrics {

LateExporter::LateExporter(std::string address, std::chrono::milliseconds interval,
                           std::function<void(const std::string&)> on_bound)
    : address_(std::move(address)),
      interval_(interval),
      on_bound_(std::move(on_bound)),
      thread_([this] { keep_trying(); }) {}

LateExporter::~LateExporter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_all();
  thread_.join();
  exporter_.reset();  // after the join: the thread no longer touches it
}

void LateExporter::expose(std::shared_ptr<prometheus::Collectable> collectable) {
  std::lock_guard lock(mutex_);
  collectable_ = collectable;
  if (exporter_) exporter_->expose(std::move(collectable));
}

bool LateExporter::bound() const {
  std::lock_guard lock(mutex_);
  return exporter_ != nullptr;
}

void LateExporter::keep_trying() {
  std::unique_lock lock(mutex_);
  while (!stop_.wait_for(lock, interval_, [this] { return stopping_; })) {
    lock.unlock();
    std::ostringstream quiet;  // a fixed port: nothing to announce
    auto started = Exporter::start(address_, quiet);
    lock.lock();
    if (!started) continue;  // still taken: the next interval
    if (stopping_) return;   // destroyed on the way out, with the lock
    exporter_ = std::move(*started);
    if (collectable_) exporter_->expose(collectable_);
    lock.unlock();
    if (on_bound_) on_bound_(exporter_->address());
    return;
  }
}

}  // namespace ringmail::metrics

#include "app/recipients_job_source.h"

#include <fmt/format.h>

#include "app/human_format.h"

namespace ringmail::app {

RecipientsJobSource::RecipientsJobSource(RecipientsFile recipients, std::string sender,
                                         smtp::EncodedBody body, Console& console,
                                         uint64_t max_reported)
    : recipients_(std::move(recipients)),
      sender_(std::move(sender)),
      body_(std::move(body)),
      console_(console),
      max_reported_(max_reported) {
  recipients_.report_duplicates(true);
}

std::optional<engine::DeliveryItem> RecipientsJobSource::next() {
  if (exhausted()) return std::nullopt;
  while (auto record = recipients_.next()) {
    if (record->has_value()) {
      accepted_.fetch_add(1, std::memory_order_relaxed);
      return engine::DeliveryItem{sender_, std::move((*record)->address), body_};
    }
    // A duplicate is not the file's fault: the address is sent once and the run is judged
    // without it.
    std::atomic<uint64_t>& counter = record->error().duplicate() ? duplicates_ : rejected_;
    uint64_t count = counter.fetch_add(1, std::memory_order_relaxed) + 1;
    if (count <= max_reported_) console_.print_line(record->error().to_string());
  }
  uint64_t rejected = this->rejected();
  if (rejected > max_reported_) {
    console_.print_line(fmt::format("{}: ... {} more refused lines", recipients_.path(),
                                    group_thousands(rejected - max_reported_)));
  }
  if (uint64_t duplicates = this->duplicates(); duplicates > 0) {
    console_.print_line(
        fmt::format("{}: {} duplicates skipped", recipients_.path(), group_thousands(duplicates)));
  }
  exhausted_.store(true, std::memory_order_release);
  return std::nullopt;
}

}  // namespace ringmail::app

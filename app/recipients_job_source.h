// The engine's work for one `ringmail send`: every valid recipient of a recipients file,
// each sent the same message from the same sender. Refused lines are reported and counted;
// an address repeated in the file is reported and skipped, counted apart.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "app/console.h"
#include "app/recipients_file.h"
#include "engine/seams.h"

namespace ringmail::app {

class RecipientsJobSource final : public engine::JobSource {
 public:
  // `console` must outlive this source. At most `max_reported` refused lines are printed,
  // then one "... N more" line when the file is exhausted; likewise at most `max_reported`
  // duplicates, then one "N duplicates skipped" line.
  RecipientsJobSource(RecipientsFile recipients, std::string sender, smtp::EncodedBody body,
                      Console& console, uint64_t max_reported = 20);

  // Called by the engine's feeder thread only.
  std::optional<engine::DeliveryItem> next() override;

  // Any thread, any time.
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }
  uint64_t duplicates() const { return duplicates_.load(std::memory_order_relaxed); }
  bool exhausted() const { return exhausted_.load(std::memory_order_acquire); }

 private:
  RecipientsFile recipients_;
  const std::string sender_;
  const smtp::EncodedBody body_;
  Console& console_;
  const uint64_t max_reported_;
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> rejected_{0};
  std::atomic<uint64_t> duplicates_{0};
  std::atomic<bool> exhausted_{false};
};

}  // namespace ringmail::app

// The order in which a domain's mail exchangers are tried (RFC 5321 §5.1): by preference,
// equal preferences in random order, so that equally preferred hosts share the load.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace ringmail::dns {

// One MX record as read from the answer; `host` lower-case, without the trailing dot, ""
// for the root (the RFC 7505 null MX target).
struct MxRecord {
  std::string host;
  uint16_t preference = 0;
};

// RFC 7505: a single MX record whose target is the root. (Its preference should be 0; any
// preference is accepted, as the root can receive no mail either way.)
bool is_null_mx(std::span<const MxRecord> records);

// Drops root targets (a null MX mixed with real ones is a misconfiguration; the real ones
// still work), keeps the lowest preference of a host listed twice, sorts by preference,
// shuffles each run of equal preferences with `rng`, and keeps the first `max_exchangers`.
std::vector<MxRecord> order_mx_records(std::vector<MxRecord> records, size_t max_exchangers,
                                       std::mt19937& rng);

// Shuffles each run of equal `preference` in `items`, which must be sorted by preference.
template <typename T>
void shuffle_equal_preferences(std::span<T> items, std::mt19937& rng) {
  auto first = items.begin();
  while (first != items.end()) {
    auto last = std::find_if(first, items.end(),
                             [&](const T& item) { return item.preference != first->preference; });
    if (last - first > 1) std::shuffle(first, last, rng);
    first = last;
  }
}

// True when `items` (sorted by preference) has a run of two or more equal preferences,
// i.e. when shuffle_equal_preferences could change it.
template <typename T>
bool has_equal_preferences(std::span<const T> items) {
  for (size_t i = 1; i < items.size(); ++i)
    if (items[i].preference == items[i - 1].preference) return true;
  return false;
}

}  // namespace ringmail::dns

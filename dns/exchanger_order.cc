#include "dns/exchanger_order.h"

#include <unordered_map>

namespace ringmail::dns {

bool is_null_mx(std::span<const MxRecord> records) {
  return records.size() == 1 && records[0].host.empty();
}

std::vector<MxRecord> order_mx_records(std::vector<MxRecord> records, size_t max_exchangers,
                                       std::mt19937& rng) {
  std::vector<MxRecord> unique;
  std::unordered_map<std::string, size_t> index_of;
  for (MxRecord& record : records) {
    if (record.host.empty()) continue;
    auto [it, inserted] = index_of.try_emplace(record.host, unique.size());
    if (inserted) {
      unique.push_back(std::move(record));
    } else {
      unique[it->second].preference = std::min(unique[it->second].preference, record.preference);
    }
  }
  std::stable_sort(unique.begin(), unique.end(), [](const MxRecord& a, const MxRecord& b) {
    return a.preference < b.preference;
  });
  shuffle_equal_preferences(std::span<MxRecord>(unique), rng);
  if (unique.size() > max_exchangers) unique.resize(max_exchangers);
  return unique;
}

}  // namespace ringmail::dns

#include "engine/site_counters.h"

#include <algorithm>
#include <cctype>

namespace ringmail::engine {
namespace {

std::string lower(std::string_view name) {
  std::string out(name);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

void SiteCounts::add(const SiteCounts& other) {
  for (size_t i = 0; i < recipients.size(); ++i) recipients[i] += other.recipients[i];
  connection_failures += other.connection_failures;
}

SiteCounts SiteSlot::read() const {
  SiteCounts c;
  for (size_t i = 0; i < recipients_.size(); ++i)
    c.recipients[i] = recipients_[i].load(std::memory_order_relaxed);
  c.connection_failures = connection_failures_.load(std::memory_order_relaxed);
  return c;
}

void SiteCounters::configure(std::span<const std::string> configured, size_t capacity) {
  if (configured_) return;
  configured_ = true;
  slot_count_ = configured.size() + capacity;
  slots_ = std::make_unique<SiteSlot[]>(slot_count_);
  size_t published = 0;
  for (const std::string& site : configured) {
    std::string name = lower(site);
    if (name.empty() || by_name_.contains(name)) continue;
    slots_[published].name_ = name;
    by_name_.emplace(std::move(name), &slots_[published]);
    ++published;
  }
  configured_count_ = published;
  published_.store(published, std::memory_order_release);
}

SiteSlot& SiteCounters::slot_for(std::string_view site) {
  if (!configured_) configure({});
  std::string name = lower(site);
  if (auto it = by_name_.find(name); it != by_name_.end()) return *it->second;
  const size_t published = published_.load(std::memory_order_relaxed);
  if (name.empty() || published == slot_count_) return other_;
  SiteSlot& slot = slots_[published];
  slot.name_ = name;
  by_name_.emplace(std::move(name), &slot);
  published_.store(published + 1, std::memory_order_release);
  return slot;
}

SiteSlot& SiteCounters::existing_slot_or_other(std::string_view site) {
  auto it = by_name_.find(lower(site));
  return it != by_name_.end() ? *it->second : other_;
}

bool SiteCounters::is_configured(std::string_view site) const {
  auto it = by_name_.find(lower(site));
  return it != by_name_.end() && it->second < slots_.get() + configured_count_;
}

void SiteCounters::read(std::vector<SiteSample>& named, SiteCounts& other) const {
  const size_t published = published_.load(std::memory_order_acquire);
  named.clear();
  named.reserve(published);
  for (size_t i = 0; i < published; ++i) named.push_back({slots_[i].name_, slots_[i].read()});
  std::sort(named.begin(), named.end(),
            [](const SiteSample& a, const SiteSample& b) { return a.name < b.name; });
  other = other_.read();
}

}  // namespace ringmail::engine

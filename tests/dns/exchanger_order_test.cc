#include "dns/exchanger_order.h"

#include <gtest/gtest.h>

#include <set>

namespace ringmail::dns {
namespace {

std::vector<std::string> hosts(const std::vector<MxRecord>& records) {
  std::vector<std::string> names;
  for (const MxRecord& r : records) names.push_back(r.host);
  return names;
}

TEST(OrderMxRecords, SortsByPreferenceAndCaps) {
  std::mt19937 rng(1);
  auto ordered = order_mx_records({{"c", 30}, {"a", 10}, {"d", 40}, {"b", 20}}, 3, rng);
  EXPECT_EQ(hosts(ordered), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(OrderMxRecords, DuplicatesKeepTheirBestPreferenceAndRootTargetsGo) {
  std::mt19937 rng(1);
  auto ordered = order_mx_records({{"b", 20}, {"a", 30}, {"", 0}, {"a", 10}}, 5, rng);
  ASSERT_EQ(hosts(ordered), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ordered[0].preference, 10);
}

TEST(OrderMxRecords, EqualPreferencesComeInBothOrders) {
  std::set<std::vector<std::string>> seen;
  for (unsigned seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    auto ordered = order_mx_records({{"z", 5}, {"x", 10}, {"y", 10}}, 5, rng);
    ASSERT_EQ(ordered[0].host, "z");
    seen.insert(hosts(ordered));
  }
  EXPECT_EQ(seen.size(), 2u);
}

TEST(IsNullMx, OnlyASingleRootTarget) {
  EXPECT_TRUE(is_null_mx(std::vector<MxRecord>{{"", 0}}));
  EXPECT_TRUE(is_null_mx(std::vector<MxRecord>{{"", 10}}));
  EXPECT_FALSE(is_null_mx(std::vector<MxRecord>{{"", 0}, {"a", 10}}));
  EXPECT_FALSE(is_null_mx(std::vector<MxRecord>{{"a", 0}}));
  EXPECT_FALSE(is_null_mx(std::vector<MxRecord>{}));
}

}  // namespace
}  // namespace ringmail::dns

#include "dns/domain_name.h"

#include <gtest/gtest.h>

namespace ringmail::dns {
namespace {

TEST(NormalizeDomain, LowerCasesAndDropsOneTrailingDot) {
  EXPECT_EQ(normalize_domain("Example.TEST."), "example.test");
  EXPECT_EQ(normalize_domain("a-b_c.xn--bcher-kva.test"), "a-b_c.xn--bcher-kva.test");
  EXPECT_EQ(normalize_domain("localhost"), "localhost");
}

TEST(NormalizeDomain, RejectsWhatDnsCannotCarry) {
  EXPECT_FALSE(normalize_domain(""));
  EXPECT_FALSE(normalize_domain("."));
  EXPECT_FALSE(normalize_domain("a..test"));
  EXPECT_FALSE(normalize_domain(".test"));
  EXPECT_FALSE(normalize_domain("a.test.."));
  EXPECT_FALSE(normalize_domain("bad name.test"));
  EXPECT_FALSE(
      normalize_domain("b\xc3\xbc"
                       "cher.test"));  // U-label: A-labels only
  EXPECT_FALSE(normalize_domain(std::string("nul\0.test", 9)));
  EXPECT_FALSE(normalize_domain("[192.0.2.1]"));
}

TEST(NormalizeDomain, LengthLimits) {
  const std::string label63(63, 'a');
  EXPECT_TRUE(normalize_domain(label63 + ".test"));
  EXPECT_FALSE(normalize_domain(label63 + "a.test"));

  // 4 labels of 63 + 3 dots = 255 characters; trimmed to 253 it is the longest name.
  std::string name = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
  ASSERT_EQ(name.size(), 253u);
  EXPECT_TRUE(normalize_domain(name));
  EXPECT_TRUE(normalize_domain(name + "."));
  EXPECT_FALSE(normalize_domain(name + "b"));
  auto error = normalize_domain(std::string(100000, 'x'));
  ASSERT_FALSE(error);
  EXPECT_LT(error.error().size(), 200u);  // quotes a prefix only
}

}  // namespace
}  // namespace ringmail::dns

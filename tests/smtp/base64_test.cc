// base64_encode against RFC 4648 §10's vectors, plus bytes that exercise every bit.
#include "smtp/base64.h"

#include <gtest/gtest.h>

#include <string>

namespace ringmail::smtp {
namespace {

TEST(Base64Test, Rfc4648Vectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
}

TEST(Base64Test, HighAndNulBytes) {
  EXPECT_EQ(base64_encode(std::string("\xff\xff\xff", 3)), "////");
  EXPECT_EQ(base64_encode(std::string("\xfb\xef\xbe", 3)), "++++");
  EXPECT_EQ(base64_encode(std::string("\0\0\0\0", 4)), "AAAAAA==");
  // The SASL PLAIN response of RFC 4616 §4's example.
  EXPECT_EQ(base64_encode(std::string("\0tim\0tanstaaftanstaaf", 21)),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
}

}  // namespace
}  // namespace ringmail::smtp

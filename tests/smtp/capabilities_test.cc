// parse_ehlo_reply: keywords case-insensitive, parameters read, the greeting line skipped.
#include "smtp/capabilities.h"

#include <gtest/gtest.h>

namespace ringmail::smtp {
namespace {

Reply ehlo(std::string text) {
  Reply r;
  r.code = 250;
  r.text = std::move(text);
  return r;
}

TEST(CapabilitiesTest, TypicalPostfixReply) {
  Capabilities c = parse_ehlo_reply(
      ehlo("mx.example.net\nPIPELINING\nSIZE 10240000\nVRFY\nETRN\nSTARTTLS\n"
           "AUTH PLAIN login\nAUTH=PLAIN LOGIN CRAM-MD5\nENHANCEDSTATUSCODES\n8BITMIME\nDSN\n"
           "SMTPUTF8\nCHUNKING"));
  EXPECT_TRUE(c.esmtp);
  EXPECT_TRUE(c.pipelining);
  EXPECT_TRUE(c.size);
  EXPECT_EQ(c.size_limit, 10240000u);
  EXPECT_TRUE(c.starttls);
  EXPECT_TRUE(c.enhanced_status_codes);
  EXPECT_TRUE(c.eight_bit_mime);
  EXPECT_TRUE(c.dsn);
  EXPECT_TRUE(c.smtputf8);
  EXPECT_TRUE(c.chunking);
  EXPECT_EQ(c.auth_mechanisms, "PLAIN LOGIN CRAM-MD5");
}

TEST(CapabilitiesTest, GreetingLineIsNotAKeyword) {
  Capabilities c = parse_ehlo_reply(ehlo("PIPELINING says the greeting"));
  EXPECT_TRUE(c.esmtp);
  EXPECT_FALSE(c.pipelining);
}

TEST(CapabilitiesTest, CaseInsensitiveAndSizeWithoutLimit) {
  Capabilities c = parse_ehlo_reply(ehlo("mx\npipelining\nsize\nStartTLS\nXFOO bar"));
  EXPECT_TRUE(c.pipelining);
  EXPECT_TRUE(c.size);
  EXPECT_EQ(c.size_limit, 0u);
  EXPECT_TRUE(c.starttls);
  EXPECT_FALSE(c.chunking);
}

TEST(CapabilitiesTest, BadSizeParameterMeansNoLimit) {
  EXPECT_EQ(parse_ehlo_reply(ehlo("mx\nSIZE lots")).size_limit, 0u);
  EXPECT_EQ(parse_ehlo_reply(ehlo("mx\nSIZE 99999999999999999999999")).size_limit, 0u);
}

}  // namespace
}  // namespace ringmail::smtp

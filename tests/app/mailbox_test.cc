#include "app/mailbox.h"

#include <gtest/gtest.h>

#include <string>

namespace ringmail::app {
namespace {

TEST(app_mailbox, AcceptsOrdinaryAddressesAndLowerCasesTheDomain) {
  EXPECT_EQ(validate_mailbox("alice@example.com"), "example.com");
  EXPECT_EQ(validate_mailbox("Bob.Smith+tag@Mail.Example.COM"), "mail.example.com");
  EXPECT_EQ(validate_mailbox("o'hara!#$%&*/=?^_`{|}~-x@a-b.c0"), "a-b.c0");
  EXPECT_EQ(validate_mailbox("user@localhost"), "localhost");
  EXPECT_EQ(validate_mailbox("user@[192.0.2.1]"), "[192.0.2.1]");
  EXPECT_EQ(validate_mailbox("user@[IPv6:2001:db8::1]"), "[ipv6:2001:db8::1]");
  EXPECT_TRUE(validate_mailbox(std::string(64, 'l') + "@example.com"));
}

struct Refusal {
  std::string address;
  std::string reason;
};

class app_mailbox_refusals : public ::testing::TestWithParam<Refusal> {};

TEST_P(app_mailbox_refusals, NamesTheReason) {
  auto result = validate_mailbox(GetParam().address);
  ASSERT_FALSE(result) << GetParam().address;
  EXPECT_EQ(result.error(), GetParam().reason);
}

INSTANTIATE_TEST_SUITE_P(
    Syntax, app_mailbox_refusals,
    ::testing::Values(
        Refusal{"", "empty address"}, Refusal{"alice.example.com", "missing '@'"},
        Refusal{"a@b@c.d", "more than one '@'"}, Refusal{"@example.com", "empty local part"},
        Refusal{std::string(65, 'l') + "@example.com", "local part longer than 64 octets"},
        Refusal{"a(b)@example.com", "invalid character '(' in local part"},
        Refusal{"\"quoted\"@example.com", "quoted local part is not supported"},
        Refusal{".a@example.com", "misplaced '.' in local part"},
        Refusal{"a.@example.com", "misplaced '.' in local part"},
        Refusal{"a..b@example.com", "misplaced '.' in local part"},
        Refusal{"alice@", "empty domain"}, Refusal{"alice@example..com", "empty label in domain"},
        Refusal{"alice@example.com.", "empty label in domain"},
        Refusal{"alice@-example.com", "domain label '-example' starts or ends with '-'"},
        Refusal{"alice@exa_mple.com", "invalid character '_' in domain"},
        Refusal{"alice@" + std::string(64, 'd') + ".com", "domain label longer than 63 octets"},
        Refusal{"a@" + std::string(260, 'd'), "address longer than 254 octets"},
        Refusal{"alice@[300.1.1.1]", "invalid address literal '[300.1.1.1]'"},
        Refusal{"alice@[IPv6:zz::1]", "invalid address literal '[IPv6:zz::1]'"},
        Refusal{"alice@[1.2.3.4", "invalid address literal '[1.2.3.4'"},
        Refusal{"jos\xC3\xA9@example.com",
                "non-ASCII character in address (SMTPUTF8 is not supported)"}));

// Anything that could end the RCPT command early and start another must be refused.
INSTANTIATE_TEST_SUITE_P(
    Injection, app_mailbox_refusals,
    ::testing::Values(Refusal{"a@b.c>\r\nRCPT TO:<x@y>", "carriage return in address"},
                      Refusal{"a@b.c>", "'>' in address"}, Refusal{"<a@b.c", "'<' in address"},
                      Refusal{"a@b.c\nDATA", "line feed in address"},
                      Refusal{"a@b.c\rQUIT", "carriage return in address"},
                      Refusal{"a@b.c NOTIFY=NEVER", "space in address"},
                      Refusal{std::string("a@b.c\0x", 7), "control character 0x00 in address"},
                      Refusal{"a@b.c\tx", "control character 0x09 in address"},
                      Refusal{"a@b.c\x7f", "control character 0x7F in address"}));

TEST(app_mailbox, ValidatesEhloNames) {
  EXPECT_EQ(validate_domain("Mail.Example.com"), "mail.example.com");
  EXPECT_EQ(validate_domain("[127.0.0.1]"), "[127.0.0.1]");
  EXPECT_FALSE(validate_domain(""));
  EXPECT_EQ(validate_domain("mx\r\nMAIL FROM:<x@y>").error(), "carriage return in domain");
  EXPECT_EQ(validate_domain("my host").error(), "space in domain");
}

}  // namespace
}  // namespace ringmail::app

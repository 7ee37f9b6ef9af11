#include "app/relay.h"

#include <gtest/gtest.h>

namespace ringmail::app {
namespace {

TEST(app_relay, ParsesHostPortForms) {
  auto name = parse_relay("mail.example.com:587");
  ASSERT_TRUE(name) << name.error();
  EXPECT_EQ(name->host, "mail.example.com");
  EXPECT_EQ(name->port, 587);

  auto v4 = parse_relay("192.0.2.1:2525");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "192.0.2.1");
  EXPECT_EQ(v4->port, 2525);

  auto v6 = parse_relay("[2001:db8::1]:25");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "2001:db8::1");
  EXPECT_EQ(v6->port, 25);

  auto no_port = parse_relay("relay.example");
  ASSERT_TRUE(no_port);
  EXPECT_EQ(no_port->port, 25);
  auto v6_no_port = parse_relay("[::1]");
  ASSERT_TRUE(v6_no_port);
  EXPECT_EQ(v6_no_port->host, "::1");
  EXPECT_EQ(v6_no_port->port, 25);
}

TEST(app_relay, RefusesBadValues) {
  EXPECT_EQ(parse_relay("").error(), "invalid relay '': expected HOST:PORT or [IPv6]:PORT");
  EXPECT_EQ(parse_relay("host:0").error(),
            "invalid relay 'host:0': port must be a number from 1 to 65535");
  EXPECT_EQ(parse_relay("host:65536").error(),
            "invalid relay 'host:65536': port must be a number from 1 to 65535");
  EXPECT_EQ(parse_relay("host:25x").error(),
            "invalid relay 'host:25x': port must be a number from 1 to 65535");
  EXPECT_EQ(parse_relay("host:").error(),
            "invalid relay 'host:': port must be a number from 1 to 65535");
  EXPECT_EQ(parse_relay(":25").error(), "invalid relay ':25': no host");
  EXPECT_EQ(parse_relay("::1:25").error(),
            "invalid relay '::1:25': write an IPv6 address in brackets, [::1]:25");
  EXPECT_EQ(parse_relay("[::1:25").error(), "invalid relay '[::1:25': missing ']'");
  EXPECT_EQ(parse_relay("[]:25").error(),
            "invalid relay '[]:25': brackets must hold an IPv6 address");
  EXPECT_EQ(parse_relay("[::1]25").error(), "invalid relay '[::1]25': expected ':PORT' after ']'");
  EXPECT_EQ(parse_relay("bad host:25").error(),
            "invalid relay 'bad host:25': ' ' is not allowed in a host name");
}

TEST(app_relay, ResolvesToANumericAddress) {
  auto v4 = resolve_relay({"127.0.0.1", 2525});
  ASSERT_TRUE(v4) << v4.error();
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 2525);

  auto name = resolve_relay({"localhost", 25});
  ASSERT_TRUE(name) << name.error();
  EXPECT_EQ(name->host, "127.0.0.1");  // IPv4 preferred

  auto v6 = resolve_relay({"::1", 25});
  ASSERT_TRUE(v6) << v6.error();
  EXPECT_EQ(v6->host, "::1");
}

}  // namespace
}  // namespace ringmail::app

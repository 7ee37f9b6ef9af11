// A fixture for engine tests over TLS against aiosmtpd on loopback: a temporary directory,
// a CA made at test time with a server certificate for mx.ringmail.test, servers using it,
// and engine options that trust it.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <utility>

#include "tests/engine/engine_harness.h"
#include "tests/support/aiosmtpd_server.h"
#include "tests/support/test_ca.h"

namespace ringmail::test {

class TlsPeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = ScopedTempDir::create("ringmail-tls");
    ASSERT_TRUE(dir) << dir.error();
    dir_.emplace(std::move(*dir));
    auto ca = TestCa::create(dir_->path(), "mx.ringmail.test");
    ASSERT_TRUE(ca) << ca.error();
    ca_.emplace(std::move(*ca));
  }

  // aiosmtpd with `o`; a TLS one gets the CA's server certificate.
  std::unique_ptr<AiosmtpdServer> server(AiosmtpdOptions o) {
    if (o.tls != AiosmtpdOptions::Tls::kNone) {
      o.cert_file = ca_->server_cert();
      o.key_file = ca_->server().key_pem;
    }
    auto s = AiosmtpdServer::start(o);
    if (!s) ADD_FAILURE() << s.error();
    return s ? std::move(*s) : nullptr;
  }

  // test_options() with TLS `mode`, trusting the CA.
  engine::EngineOptions options(engine::TlsPolicy::Mode mode) {
    auto o = test_options();
    o.security.tls.mode = mode;
    o.security.tls.ca_file = ca_->ca_pem().string();
    return o;
  }

  std::optional<ScopedTempDir> dir_;
  std::optional<TestCa> ca_;
};

}  // namespace ringmail::test

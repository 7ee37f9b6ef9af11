// A throw-away certificate authority for TLS tests, made at test time with the openssl
// CLI: a CA certificate, and server certificates it signs for a host name plus 127.0.0.1.
#pragma once

#include <expected>
#include <filesystem>
#include <string>
#include <string_view>

namespace ringmail::test {

// A fresh private directory under the temp dir, removed with everything in it by the
// destructor. Movable.
class ScopedTempDir {
 public:
  static std::expected<ScopedTempDir, std::string> create(std::string_view prefix = "ringmail");
  ScopedTempDir(ScopedTempDir&& other) noexcept;
  ScopedTempDir& operator=(ScopedTempDir&&) = delete;
  ~ScopedTempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  explicit ScopedTempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

struct TestCertificate {
  std::filesystem::path cert_pem;  // the leaf only (clients get the CA from ca_pem())
  std::filesystem::path key_pem;   // unencrypted P-256 key
  std::string host_name;           // SANs: DNS:host_name and IP:127.0.0.1
};

class TestCa {
 public:
  // Writes ca.pem/ca.key and server.pem/server.key (for `server_host`) into `dir`, which
  // must exist and outlive the files' use. Valid from now for two days; P-256 keys, so it
  // takes a few tens of milliseconds. `common_name` tells two CAs apart in error output.
  static std::expected<TestCa, std::string> create(
      const std::filesystem::path& dir, std::string_view server_host = "mx.ringmail.test",
      std::string_view common_name = "ringmail test CA");

  // Another server certificate from this CA, as <stem>.pem / <stem>.key in the same dir.
  std::expected<TestCertificate, std::string> issue(std::string_view host_name,
                                                    std::string_view stem) const;

  const std::filesystem::path& ca_pem() const { return ca_pem_; }
  const TestCertificate& server() const { return server_; }
  const std::filesystem::path& server_cert() const { return server_.cert_pem; }
  const std::filesystem::path& server_key() const { return server_.key_pem; }
  const std::string& server_host() const { return server_.host_name; }

  static constexpr const char* kOpenssl = "/usr/bin/openssl";

 private:
  TestCa() = default;
  std::filesystem::path dir_;
  std::filesystem::path ca_pem_;
  std::filesystem::path ca_key_;
  TestCertificate server_;
};

}  // namespace ringmail::test

#include "tests/support/test_ca.h"

#include <stdlib.h>

#include <atomic>
#include <fstream>

#include "tests/support/run_command.h"

namespace ringmail::test {
namespace {

using namespace std::chrono_literals;

std::expected<void, std::string> openssl(std::vector<std::string> args) {
  args.insert(args.begin(), TestCa::kOpenssl);
  auto result = run_command(args, 30s);
  if (!result) return std::unexpected(result.error());
  if (result->exit_code != 0 || result->timed_out) {
    std::string command;
    for (const auto& a : args) command += a + " ";
    return std::unexpected("`" + command + "` failed (exit " + std::to_string(result->exit_code) +
                           "): " + result->output);
  }
  return {};
}

std::string next_serial() {
  static std::atomic<unsigned> counter{0};
  return std::to_string(1000 + counter.fetch_add(1));
}

}  // namespace

std::expected<ScopedTempDir, std::string> ScopedTempDir::create(std::string_view prefix) {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / (std::string(prefix) + ".XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return std::unexpected("mkdtemp " + tmpl + " failed");
  return ScopedTempDir(tmpl);
}

ScopedTempDir::ScopedTempDir(ScopedTempDir&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

ScopedTempDir::~ScopedTempDir() {
  if (path_.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::expected<TestCa, std::string> TestCa::create(const std::filesystem::path& dir,
                                                  std::string_view server_host,
                                                  std::string_view common_name) {
  TestCa ca;
  ca.dir_ = dir;
  ca.ca_pem_ = dir / "ca.pem";
  ca.ca_key_ = dir / "ca.key";
  auto made =
      openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
               "-keyout", ca.ca_key_.string(), "-out", ca.ca_pem_.string(), "-days", "2", "-subj",
               "/CN=" + std::string(common_name), "-addext", "basicConstraints=critical,CA:TRUE",
               "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  if (!made) return std::unexpected(made.error());
  auto server = ca.issue(server_host, "server");
  if (!server) return std::unexpected(server.error());
  ca.server_ = std::move(*server);
  return ca;
}

std::expected<TestCertificate, std::string> TestCa::issue(std::string_view host_name,
                                                          std::string_view stem) const {
  TestCertificate cert;
  cert.host_name = host_name;
  const std::string base = (dir_ / std::string(stem)).string();
  cert.cert_pem = base + ".pem";
  cert.key_pem = base + ".key";
  const std::string csr = base + ".csr";
  const std::string ext = base + ".ext";
  {
    std::ofstream out(ext);
    out << "basicConstraints=critical,CA:FALSE\n"
        << "keyUsage=critical,digitalSignature,keyEncipherment\n"
        << "extendedKeyUsage=serverAuth\n"
        << "subjectAltName=DNS:" << host_name << ",IP:127.0.0.1\n";
    if (!out) return std::unexpected("cannot write " + ext);
  }
  auto request = openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-nodes", "-keyout", cert.key_pem.string(), "-out", csr, "-subj",
                          "/CN=" + std::string(host_name)});
  if (!request) return std::unexpected(request.error());
  auto signed_cert = openssl({"x509", "-req", "-in", csr, "-CA", ca_pem_.string(), "-CAkey",
                              ca_key_.string(), "-set_serial", next_serial(), "-days", "2",
                              "-extfile", ext, "-out", cert.cert_pem.string()});
  if (!signed_cert) return std::unexpected(signed_cert.error());
  return cert;
}

}  // namespace ringmail::test

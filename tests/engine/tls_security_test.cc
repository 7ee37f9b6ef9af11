// TLS fixes from a security review, each against real peers on loopback: a failed
// opportunistic STARTTLS falls back to plaintext for a while only; a cached session is
// never resumed for a connection expecting another server name at the same address; the
// outcome log carries the TLS version, cipher and verification.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <expected>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "engine/domain_route_resolver.h"
#include "engine/tls_context.h"
#include "metrics/outcome_log.h"
#include "tests/dns/dnsmasq_process.h"
#include "tests/engine/engine_harness.h"
#include "tests/engine/tls_peer_fixture.h"
#include "tests/support/aiosmtpd_server.h"
#include "tests/support/test_ca.h"

namespace ringmail::test {
namespace {

using smtp::RecipientStatus;

// A TCP relay on 127.0.0.1 in front of a server: it forwards every byte both ways, except
// that it cuts the first connection whose client starts a TLS record (the ClientHello
// after STARTTLS). So the server's first handshake fails and every later one works.
class HandshakeCuttingProxy {
 public:
  static std::expected<std::unique_ptr<HandshakeCuttingProxy>, std::string> start(
      uint16_t upstream) {
    std::unique_ptr<HandshakeCuttingProxy> p(new HandshakeCuttingProxy(upstream));
    p->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof a;
    if (p->listen_fd_ < 0 ||
        ::bind(p->listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(p->listen_fd_, 16) != 0 ||
        ::getsockname(p->listen_fd_, reinterpret_cast<sockaddr*>(&a), &length) != 0)
      return std::unexpected(std::string("proxy listen: ") + std::strerror(errno));
    p->port_ = ntohs(a.sin_port);
    p->acceptor_ = std::thread([raw = p.get()] { raw->accept_loop(); });
    return p;
  }
  ~HandshakeCuttingProxy() {
    stopping_ = true;
    acceptor_.join();
    for (auto& t : relays_) t.join();
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }
  size_t handshakes_cut() const { return cut_ ? 1 : 0; }

 private:
  explicit HandshakeCuttingProxy(uint16_t upstream) : upstream_(upstream) {}

  void accept_loop() {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      relays_.emplace_back([this, client] { relay(client); });
    }
  }

  void relay(int client) {
    const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(upstream_);
    if (server >= 0 && ::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      char buffer[16384];
      while (!stopping_) {
        pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
        if (::poll(p, 2, 20) <= 0) continue;
        bool done = false;
        for (int i = 0; i < 2 && !done; ++i) {
          if (p[i].revents == 0) continue;
          const ssize_t n = ::read(p[i].fd, buffer, sizeof buffer);
          if (n <= 0) {
            done = true;
            break;
          }
          // 0x16 0x03: a TLS handshake record; an SMTP command never starts so.
          if (i == 0 && n >= 2 && buffer[0] == 0x16 && buffer[1] == 0x03 && !cut_.exchange(true)) {
            done = true;
            break;
          }
          if (!write_all(p[1 - i].fd, buffer, size_t(n))) done = true;
        }
        if (done) break;
      }
    }
    if (server >= 0) ::close(server);
    ::close(client);
  }

  static bool write_all(int fd, const char* data, size_t size) {
    while (size > 0) {
      const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
      if (n <= 0) return false;
      data += n;
      size -= size_t(n);
    }
    return true;
  }

  const uint16_t upstream_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> cut_{false};
  std::thread acceptor_;
  std::vector<std::thread> relays_;  // only the acceptor touches it until the destructor
};

// Records every outcome (and hands it on to `next`, if any), so a StagedSource can wait
// for a number of them.
class CountingSink final : public engine::OutcomeSink {
 public:
  explicit CountingSink(engine::OutcomeSink* next = nullptr) : next_(next) {}
  void on_transaction_finished(unsigned shard, const smtp::TransactionOutcome& outcome) override {
    if (next_) next_->on_transaction_finished(shard, outcome);
    std::lock_guard lock(mutex_);
    outcomes_.push_back(outcome);
    changed_.notify_all();
  }
  bool wait_for(size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return outcomes_.size() >= count; });
  }
  std::vector<smtp::TransactionOutcome> outcomes() const {
    std::lock_guard lock(mutex_);
    return outcomes_;
  }

 private:
  engine::OutcomeSink* next_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<smtp::TransactionOutcome> outcomes_;
};

// Hands out its stages one after the other: a stage is offered once every transaction of
// the stages before it has an outcome (one recipient per transaction), so what the later
// stages do can depend on what the earlier ones left behind (a cached TLS session).
class StagedSource final : public engine::JobSource {
 public:
  StagedSource(std::vector<std::vector<engine::DeliveryItem>> stages, CountingSink& sink)
      : stages_(std::move(stages)), sink_(sink) {}
  std::optional<engine::DeliveryItem> next() override {
    if (stage_ >= stages_.size() || next_ >= stages_[stage_].size()) return std::nullopt;
    ++handed_out_;
    return std::move(stages_[stage_][next_++]);
  }
  bool wait_for_more() override {
    if (stage_ + 1 >= stages_.size() || interrupted_) return false;
    if (!sink_.wait_for(handed_out_, std::chrono::seconds(20))) return false;
    ++stage_;
    next_ = 0;
    return !interrupted_;
  }
  void interrupt() override { interrupted_ = true; }

 private:
  std::vector<std::vector<engine::DeliveryItem>> stages_;
  CountingSink& sink_;
  size_t stage_ = 0, next_ = 0, handed_out_ = 0;
  std::atomic<bool> interrupted_{false};
};

struct StagedRun {
  engine::DeliverySnapshot counts;
  std::vector<smtp::TransactionOutcome> outcomes;
  bool finished = false;
};

StagedRun run_staged(const engine::EngineOptions& options, engine::RouteResolver& resolver,
                     std::vector<std::vector<engine::DeliveryItem>> stages,
                     engine::OutcomeSink* also = nullptr) {
  CountingSink sink(also);
  StagedSource source(std::move(stages), sink);
  StagedRun run;
  {
    engine::Engine engine(options, resolver, &sink);
    engine.start(source);
    run.finished = engine.wait_for(std::chrono::seconds(60));
    if (!run.finished) {
      engine.request_drain();
      engine.wait_for(std::chrono::seconds(30));
    }
    run.counts = engine.snapshot();
  }
  run.outcomes = sink.outcomes();
  return run;
}

class TlsSecurity : public TlsPeerTest {
 protected:
  std::unique_ptr<AiosmtpdServer> starttls_server() {
    AiosmtpdOptions o;
    o.tls = AiosmtpdOptions::Tls::kStartTls;
    return server(o);
  }
};

TEST_F(TlsSecurity, AFailedStarttlsFallsBackToPlaintextOnlyUntilThePauseIsOver) {
  auto server = starttls_server();
  ASSERT_TRUE(server);
  auto proxy = HandshakeCuttingProxy::start(server->port());
  ASSERT_TRUE(proxy) << proxy.error();
  auto o = options(engine::TlsPolicy::kOpportunistic);
  o.pool.dead_destination_pause = engine::Seconds(1);
  // One connection per message, one at a time, at 4 messages a second (4 at once to
  // start): the 12 messages take at least two seconds, well past the one-second pause
  // that follows the cut handshake of the very first connection.
  o.pool.max_connections = 1;
  o.pool.max_messages_per_connection = 1;
  o.pool.messages_per_second = 4;
  auto r = run_engine(o, "127.0.0.1", (*proxy)->port(), make_items(12));
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.counts.recipients_delivered, 12u);
  EXPECT_EQ((*proxy)->handshakes_cut(), 1u);
  EXPECT_EQ(r.counts.tls_failures, 1u);
  auto messages = server->messages();
  ASSERT_EQ(messages.size(), 12u);
  // The transaction the cut handshake gave back went at once, in plaintext...
  EXPECT_FALSE(messages.front().tls);
  // ...and once the pause was over, connections used STARTTLS again.
  EXPECT_TRUE(messages.back().tls);
  EXPECT_EQ(messages.back().tls_version.rfind("TLSv1.", 0), 0u) << messages.back().tls_version;
}

TEST_F(TlsSecurity, ASessionIsNeverResumedForAnotherServerNameAtTheSameAddress) {
  // Two domains whose exchangers have different names at the same address and port: the
  // server's certificate is valid for good.test's exchanger only. Under verify, the
  // session good.test's connection got must not let bad.test's connection skip the
  // certificate check (OpenSSL does not check the name again when it resumes).
  auto server = starttls_server();
  ASSERT_TRUE(server);
  DnsmasqOptions dns_options;
  dns_options.records = {"--mx-host=good.test,mx.ringmail.test,10",
                         "--mx-host=bad.test,other.ringmail.test,10",
                         "--host-record=mx.ringmail.test,127.0.0.1",
                         "--host-record=other.ringmail.test,127.0.0.1"};
  auto dns = DnsmasqProcess::start(dns_options);
  ASSERT_TRUE(dns) << dns.error();
  auto o = options(engine::TlsPolicy::kVerify);
  o.mx.resolver.servers = {(*dns)->address()};
  o.mx.resolver.families = dns::ResolverOptions::Families::kIpv4Only;
  o.pool.max_messages_per_connection = 1;  // every message opens (and resumes) anew
  engine::DomainRouteResolver resolver(std::nullopt, {}, server->port());
  std::vector<engine::DeliveryItem> later = make_items(2, 200, "bad.test");
  for (auto& i : make_items(1, 200, "good.test")) later.push_back(std::move(i));
  auto r = run_staged(o, resolver, {make_items(1, 200, "good.test"), std::move(later)});
  ASSERT_TRUE(r.finished);
  ASSERT_EQ(r.outcomes.size(), 4u);
  // The first stage: a full handshake, verified.
  EXPECT_EQ(r.outcomes[0].recipients[0].status, RecipientStatus::kDelivered);
  EXPECT_EQ(r.outcomes[0].transport_security.find("resumed"), std::string::npos);
  size_t good_resumed = 0;
  for (size_t i = 1; i < r.outcomes.size(); ++i) {
    const auto& outcome = r.outcomes[i];
    const std::string& rcpt = outcome.transaction.recipients[0];
    if (rcpt.ends_with("@good.test")) {
      // The session cache works: the same name at the same address resumes.
      EXPECT_EQ(outcome.recipients[0].status, RecipientStatus::kDelivered);
      good_resumed += outcome.transport_security.find("verified resumed") != std::string::npos;
    } else {
      EXPECT_EQ(outcome.recipients[0].status, RecipientStatus::kDeferred)
          << rcpt << " " << outcome.transport_security;
    }
  }
  EXPECT_EQ(good_resumed, 1u);
  for (const auto& m : server->messages())
    for (const auto& rcpt : m.rcpt_to) EXPECT_FALSE(rcpt.ends_with("@bad.test")) << rcpt;
}

TEST_F(TlsSecurity, TwoRelayNamesAtOneAddressAreVerifiedEachAgainstItsOwnName) {
  // Two routes through relays named differently but served at one address and port: the
  // certificate is valid for mx.ringmail.test only. Had they shared a pool, bad.test's
  // mail would ride the connection verified for good.test's name.
  auto server = starttls_server();
  ASSERT_TRUE(server);
  auto o = options(engine::TlsPolicy::kVerify);
  std::unordered_map<std::string, engine::Destination> routes;
  routes.emplace("good.test", engine::Destination{"127.0.0.1", server->port(), "mx.ringmail.test"});
  routes.emplace("bad.test", engine::Destination{"127.0.0.1", server->port(), "other.ringmail.test"});
  engine::DomainRouteResolver resolver(std::nullopt, std::move(routes), server->port());
  auto r = run_staged(o, resolver, {make_items(2, 200, "good.test"), make_items(2, 200, "bad.test")});
  ASSERT_TRUE(r.finished);
  ASSERT_EQ(r.outcomes.size(), 4u);
  for (const auto& outcome : r.outcomes) {
    const std::string& rcpt = outcome.transaction.recipients[0];
    const auto expected = rcpt.ends_with("@good.test") ? RecipientStatus::kDelivered
                                                       : RecipientStatus::kDeferred;
    EXPECT_EQ(outcome.recipients[0].status, expected) << rcpt << " " << outcome.transport_security;
  }
  for (const auto& m : server->messages())
    for (const auto& rcpt : m.rcpt_to) EXPECT_FALSE(rcpt.ends_with("@bad.test")) << rcpt;
}

TEST(TlsSessionKey, NamesTheServerNameAddressPortAndProfile) {
  const std::string key = engine::tls_session_key("mx.example.com", "192.0.2.1", 25, 0);
  EXPECT_EQ(key, "mx.example.com@192.0.2.1:25/0");
  EXPECT_NE(key, engine::tls_session_key("other.example.com", "192.0.2.1", 25, 0));
  EXPECT_NE(key, engine::tls_session_key("mx.example.com", "192.0.2.1", 25, 1));
  EXPECT_NE(key, engine::tls_session_key("mx.example.com", "192.0.2.1", 587, 0));
  EXPECT_EQ(engine::tls_session_key("mx.example.com", "2001:db8::1", 25, 0),
            "mx.example.com@[2001:db8::1]:25/0");
}

TEST(TlsPolicyMode, NamesAreTheWordsOfTheTlsOption) {
  EXPECT_STREQ(engine::to_string(engine::TlsPolicy::kDisabled), "disabled");
  EXPECT_STREQ(engine::to_string(engine::TlsPolicy::kOpportunistic), "opportunistic");
  EXPECT_STREQ(engine::to_string(engine::TlsPolicy::kRequired), "required");
  EXPECT_STREQ(engine::to_string(engine::TlsPolicy::kVerify), "verify");
}

TEST_F(TlsSecurity, TheOutcomeLogCarriesTheTlsVersionCipherAndVerification) {
  auto server = starttls_server();
  ASSERT_TRUE(server);
  const std::filesystem::path log = dir_->path() / "outcomes.log";
  auto o = options(engine::TlsPolicy::kVerify);
  engine::StaticRelayResolver resolver(
      engine::Destination{"127.0.0.1", server->port(), "mx.ringmail.test"});
  {
    auto logger = metrics::OutcomeLogger::open(log.string(), {});
    ASSERT_TRUE(logger) << logger.error();
    auto r = run_staged(o, resolver, {make_items(2)}, logger->get());
    ASSERT_TRUE(r.finished);
    EXPECT_EQ(r.counts.recipients_delivered, 2u);
  }  // the logger writes everything before it stops
  std::ifstream in(log);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& line : lines) {
    EXPECT_NE(line.find(" tls=TLSv1."), std::string::npos) << line;
    EXPECT_NE(line.find(" cipher="), std::string::npos) << line;
    EXPECT_NE(line.find(" verified=true "), std::string::npos) << line;
  }
}

}  // namespace
}  // namespace ringmail::test

// What the real binary does with faulty input files: a message with an overlong line or a
// NUL byte, a recipients file with nothing in it, repeated addresses or a huge line, a DNS
// server that is not an address. Judged by exit status and stderr, and by what a real
// smtp-sink received.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/app/ringmail_binary.h"
#include "tests/support/smtp_sink_process.h"

namespace ringmail::test {
namespace {

namespace fs = std::filesystem;

// A port nothing listens on: every check here must stop the run before it connects.
constexpr const char* kUnusedRelay = "127.0.0.1:1";

class InputFiles : public RingmailBinaryTest {
 protected:
  fs::path write(const std::string& name, const std::string& content) {
    std::ofstream(dir_ / name, std::ios::binary) << content;
    return dir_ / name;
  }
  fs::path message() { return write("m.eml", "From: a@ringmail.test\nSubject: e2e\n\nhello\n"); }
  fs::path db() const { return dir_ / "q.db"; }

  // mode: "--no-db", "--db" (this test's database) or "enqueue".
  std::vector<std::string> args(const std::string& mode, const std::string& relay,
                                const fs::path& eml, const fs::path& rcpts) {
    std::vector<std::string> a{mode == "enqueue" ? "enqueue" : "send",
                               "--from",
                               "a@ringmail.test",
                               "--message",
                               eml.string(),
                               "--recipients",
                               rcpts.string()};
    if (mode == "enqueue") {
      a.insert(a.end(), {"--db", db().string()});
    } else {
      a.insert(a.end(),
               {"--relay", relay, "--summary", "json", "--quiet", "--shards", "1", "--no-metrics"});
      if (mode == "--db") {
        a.insert(a.end(), {"--db", db().string()});
      } else {
        a.push_back("--no-db");
      }
    }
    return a;
  }
};

const std::vector<std::string> kModes = {"--no-db", "--db", "enqueue"};

TEST_F(InputFiles, MessageWithAnOverlongLineOrANulByteExitsTwoNamingFileAndLine) {
  auto rcpts = recipients(3);
  auto long_line = write("long.eml", "Subject: x\r\n\r\n" + std::string(1500, 'a') + "\r\n");
  auto nul = write("nul.eml", std::string("Subject: x\n\nbo\0dy\n", 18));
  for (const std::string& mode : kModes) {
    RingmailResult r = run(args(mode, kUnusedRelay, long_line, rcpts));
    EXPECT_EQ(r.exit_code, 2) << mode << ": " << r.err;
    EXPECT_EQ(r.err, "ringmail: " + long_line.string() + ":3: line longer than 998 octets (1500)\n")
        << mode;
    r = run(args(mode, kUnusedRelay, nul, rcpts));
    EXPECT_EQ(r.exit_code, 2) << mode << ": " << r.err;
    EXPECT_EQ(r.err, "ringmail: " + nul.string() + ":3: NUL byte\n") << mode;
    EXPECT_FALSE(fs::exists(db())) << mode;
  }
}

TEST_F(InputFiles, MessageWithAByteOrderMarkIsSentWithoutIt) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto eml = write("bom.eml", "\xEF\xBB\xBFSubject: bom\nFrom: a@ringmail.test\n\nhello\n");
  RingmailResult r = run(args("--no-db", (*sink)->address(), eml, recipients(1)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto transactions = (*sink)->transactions();
  ASSERT_EQ(transactions.size(), 1u);
  EXPECT_TRUE(transactions[0].content.starts_with("Subject: bom\n")) << transactions[0].content;
}

TEST_F(InputFiles, RecipientsFileWithoutRecipientsExitsTwoWithOneMessage) {
  auto eml = message();
  const std::vector<std::string> contents = {"", "# only a comment\n\n  # and another\n",
                                             "\xEF\xBB\xBF", "\xEF\xBB\xBF\r\n# x\r\n"};
  for (size_t i = 0; i < contents.size(); ++i) {
    auto rcpts = write("empty" + std::to_string(i) + ".txt", contents[i]);
    for (const std::string& mode : kModes) {
      RingmailResult r = run(args(mode, kUnusedRelay, eml, rcpts));
      EXPECT_EQ(r.exit_code, 2) << mode << " " << i << ": " << r.err;
      EXPECT_EQ(r.err, "ringmail: no recipients in " + rcpts.string() + "\n") << mode << " " << i;
      EXPECT_EQ(r.out, "") << mode << " " << i;
      EXPECT_FALSE(fs::exists(db())) << mode << " " << i;  // not even an empty database
    }
  }
}

TEST_F(InputFiles, RepeatedAddressesAreSentOnceAndDoNotChangeTheExitStatus) {
  auto sink = SmtpSinkProcess::start();
  ASSERT_TRUE(sink) << sink.error();
  auto eml = message();
  auto rcpts = write("dup.txt", "a@x.test\nb@x.test\nA@X.TEST\nb@x.test\n");
  for (const std::string& mode : {std::string("--no-db"), std::string("--db")}) {
    const uint64_t before = (*sink)->recipients_received();
    RingmailResult r = run(args(mode, (*sink)->address(), eml, rcpts));
    EXPECT_EQ(r.exit_code, 0) << mode << ": " << r.err;
    EXPECT_EQ((*sink)->recipients_received() - before, 2u) << mode;
    EXPECT_NE(r.err.find(rcpts.string() + ":3: duplicate of line 1\n"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(rcpts.string() + ":4: duplicate of line 2\n"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(rcpts.string() + ": 2 duplicates skipped\n"), std::string::npos) << r.err;
    auto summary = nlohmann::json::parse(r.out);
    EXPECT_EQ(summary["delivered"], 2) << mode;
    EXPECT_EQ(summary["rejected"], 0) << mode;
  }
  fs::remove(db());
  RingmailResult r = run(args("enqueue", kUnusedRelay, eml, rcpts));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("enqueued 2 recipients"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(rcpts.string() + ": 2 duplicates skipped\n"), std::string::npos) << r.err;
}

TEST_F(InputFiles, AnOverlongRecipientsLineIsRefusedAndTheRestEnqueued) {
  auto rcpts = write("big.txt", "a@x.test\n" + std::string(8 << 20, 'z') + "\nb@x.test\n");
  RingmailResult r = run(args("enqueue", kUnusedRelay, message(), rcpts));
  EXPECT_EQ(r.exit_code, 1) << r.err;  // as any refused line
  EXPECT_NE(r.err.find(rcpts.string() + ":2: line longer than 65536 octets (8388608)\n"),
            std::string::npos)
      << r.err.substr(0, 500);
  EXPECT_NE(r.err.find("enqueued 2 recipients"), std::string::npos) << r.err.substr(0, 500);
}

TEST_F(InputFiles, ADnsServerThatIsNotAnAddressStopsTheRunAtStartUp) {
  auto cfg = config("[dns]\nservers = [\"127.0.0.1:53\", \"bogus\"]\n");
  RingmailResult r =
      run({"send", "--from", "a@ringmail.test", "--message", message().string(), "--recipients",
           recipients(1).string(), "--config", cfg.string(), "--no-db", "--quiet", "--no-metrics"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "ringmail: " + cfg.string() +
                       ":2: 'dns.servers' entry \"bogus\" is not IPv4, IPv4:PORT, IPv6 or "
                       "[IPv6]:PORT (numeric: a host name is not looked up)\n");
}

}  // namespace
}  // namespace ringmail::test

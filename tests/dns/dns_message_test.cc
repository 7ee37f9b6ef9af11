#include "dns/dns_message.h"

#include <gtest/gtest.h>

#include <vector>

namespace ringmail::dns {
namespace {

// Header: id 0x1234, response, 1 question, `answers` answers.
std::vector<unsigned char> header(unsigned char answers) {
  return {0x12, 0x34, 0x81, 0x80, 0, 1, 0, answers, 0, 0, 0, 0};
}

void append(std::vector<unsigned char>& m, std::initializer_list<unsigned char> bytes) {
  m.insert(m.end(), bytes);
}

// mx.test MX IN
void question(std::vector<unsigned char>& m) {
  append(m, {2, 'm', 'x', 4, 't', 'e', 's', 't', 0, 0, 15, 0, 1});
}

// <pointer to the question name> TYPE IN TTL rdata "10 a.test" (compressed to 2 + 3 bytes)
void mx_answer(std::vector<unsigned char>& m, unsigned char type, uint32_t ttl) {
  append(m, {0xc0, 12, 0, type, 0, 1});
  append(m, {static_cast<unsigned char>(ttl >> 24), static_cast<unsigned char>(ttl >> 16),
             static_cast<unsigned char>(ttl >> 8), static_cast<unsigned char>(ttl)});
  append(m, {0, 6, 0, 10, 1, 'a', 0xc0, 15});
}

TEST(MinAnswerTtl, SmallestOfTheRecordsOfTheType) {
  auto m = header(3);
  question(m);
  mx_answer(m, 15, 300);
  mx_answer(m, 15, 120);
  mx_answer(m, 16, 5);  // TXT: not counted
  EXPECT_EQ(min_answer_ttl(m, 15), 120u);
  EXPECT_EQ(min_answer_ttl(m, 1), std::nullopt);
}

TEST(MinAnswerTtl, CnameCountsAndTopBitMeansZero) {
  auto m = header(2);
  question(m);
  mx_answer(m, 5, 30);
  mx_answer(m, 15, 300);
  EXPECT_EQ(min_answer_ttl(m, 15), 30u);

  auto n = header(1);
  question(n);
  mx_answer(n, 15, 0x80000001u);
  EXPECT_EQ(min_answer_ttl(n, 15), 0u);
}

TEST(MinAnswerTtl, MalformedMessagesNeverReadOutside) {
  auto m = header(2);
  question(m);
  mx_answer(m, 15, 300);
  mx_answer(m, 15, 100);
  // Every truncation of a valid message: either a TTL or nullopt, never a read past the end
  // (ASan checks the heap copy made for each prefix).
  for (size_t length = 0; length < m.size(); ++length) {
    std::vector<unsigned char> prefix(m.begin(), m.begin() + static_cast<long>(length));
    auto ttl = min_answer_ttl(prefix, 15);
    if (ttl) {
      EXPECT_EQ(*ttl, 300u) << length;  // only the first record fits
    }
  }
  EXPECT_EQ(min_answer_ttl(m, 15), 100u);

  auto reserved = header(1);
  question(reserved);
  append(reserved, {0x40, 0});  // extended label type
  EXPECT_EQ(min_answer_ttl(reserved, 15), std::nullopt);

  auto no_answers = header(0);
  question(no_answers);
  EXPECT_EQ(min_answer_ttl(no_answers, 15), std::nullopt);
}

}  // namespace
}  // namespace ringmail::dns

// MessageCache: bounded by bytes, least recently used out first, the newest always kept.
#include "storage/message_cache.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace ringmail::storage {
namespace {

MessageCache::Message message_of(size_t body_bytes) {
  return {std::make_shared<const std::string>("bulk@example.com"),
          std::make_shared<const std::string>(body_bytes, 'x')};
}

TEST(storage_message_cache, KeepsWhatFitsAndSharesOneBodyPointer) {
  MessageCache cache(1 << 20);
  const MessageCache::Message& first = cache.insert(1, message_of(1000));
  const MessageCache::Message* again = cache.find(1);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->body.get(), first.body.get());  // what the batcher groups on
  EXPECT_EQ(cache.find(2), nullptr);
  EXPECT_EQ(cache.size(), 1u);
}

TEST(storage_message_cache, DropsTheLeastRecentlyUsedBeyondItsBound) {
  MessageCache cache(10'000);
  cache.insert(1, message_of(3000));
  cache.insert(2, message_of(3000));
  cache.insert(3, message_of(3000));
  ASSERT_NE(cache.find(1), nullptr);  // 1 is now more recent than 2
  cache.insert(4, message_of(3000));  // over the bound: 2 goes
  EXPECT_EQ(cache.find(2), nullptr);
  EXPECT_NE(cache.find(1), nullptr);
  EXPECT_NE(cache.find(3), nullptr);
  EXPECT_NE(cache.find(4), nullptr);
  EXPECT_LE(cache.bytes(), 10'000u);
}

TEST(storage_message_cache, AServiceThatSendsOneMessageAfterAnotherStaysBounded) {
  MessageCache cache(1 << 20);
  for (int64_t id = 1; id <= 10'000; ++id) cache.insert(id, message_of(50'000));
  EXPECT_LE(cache.bytes(), size_t{1} << 20);
  EXPECT_LE(cache.size(), 21u);
  EXPECT_NE(cache.find(10'000), nullptr);
}

TEST(storage_message_cache, TinyMessagesCountTooAndTheNewestStaysWhateverItsSize) {
  MessageCache small(1000);
  for (int64_t id = 1; id <= 1000; ++id) small.insert(id, message_of(0));
  EXPECT_LT(small.size(), 10u);  // each entry's fixed cost counts

  MessageCache cache(100);
  cache.insert(1, message_of(10));
  const MessageCache::Message& big = cache.insert(2, message_of(5000));
  EXPECT_EQ(big.body->size(), 5000u);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_NE(cache.find(2), nullptr);
  EXPECT_EQ(cache.find(1), nullptr);
}

TEST(storage_message_cache, AnEvictedBodyLivesOnWhereItIsHeld) {
  MessageCache cache(1000);
  smtp::EncodedBody held = cache.insert(1, message_of(500)).body;
  cache.insert(2, message_of(900));
  EXPECT_EQ(cache.find(1), nullptr);
  EXPECT_EQ(held->size(), 500u);  // the engine's recipients still hold it
}

}  // namespace
}  // namespace ringmail::storage

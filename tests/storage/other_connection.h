// A test's database as another process sees it, through a connection of its own: one
// integer read, one message enqueued.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "smtp/message_body.h"
#include "storage/queue_store.h"

namespace ringmail::storage::testing {

// SQL that takes a database at schema version 5 back to version 4's tables (pending rows
// become ordinary queued ones), for tests of the migrations from older versions.
inline constexpr const char* kUndoVersion5 =
    "DROP VIEW recipients; DROP TABLE unclaimed; DROP TABLE leases; DROP TABLE deliveries;"
    "DROP INDEX recipients_by_state;"
    "ALTER TABLE recipient_rows RENAME TO recipients;"
    "UPDATE recipients SET state = 'queued' WHERE state = 'pending';";

// -1 when the query fails (reported) or gives NULL.
inline int64_t query_db(const StorageOptions& options, const std::string& sql) {
  auto store = QueueStore::open(options, OpenMode::kReadWriteExisting);
  EXPECT_TRUE(store);
  if (!store) return -1;
  auto v = store->connection().query_int(sql);
  EXPECT_TRUE(v) << sql;
  return v && *v ? **v : -1;
}

// One message of `campaign` to `n` recipients <prefix><i>@<domain>, due now, in a
// database created if missing; returns the message's id (0 when it failed, reported).
inline int64_t enqueue_db(const StorageOptions& options, size_t n,
                          const std::string& domain = "a.test", const std::string& campaign = "c",
                          const std::string& prefix = "r") {
  auto store = QueueStore::open(options, OpenMode::kReadWriteCreate);
  EXPECT_TRUE(store) << store.error().message;
  if (!store) return 0;
  EnqueueRequest r{campaign, "s@ringmail.test", smtp::encode_data_body("Subject: t\r\n\r\nhi\r\n"),
                   0, std::nullopt};
  const int64_t now = unix_now_ms();
  auto counts = store->begin_enqueue(r, now);
  EXPECT_TRUE(counts);
  if (!counts) return 0;
  for (size_t i = 0; i < n; ++i)
    EXPECT_TRUE(store->add_recipient(*counts, prefix + std::to_string(i) + "@" + domain, domain,
                                     now, now));
  EXPECT_TRUE(store->finish_enqueue());
  return counts->message_id;
}

}  // namespace ringmail::storage::testing

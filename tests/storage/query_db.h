// One integer from a test's database through a connection of its own, as another process
// would read it; -1 when the query fails or gives NULL (the failure is reported).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "storage/queue_store.h"

namespace ringmail::storage::testing {

inline int64_t query_db(const StorageOptions& options, const std::string& sql) {
  auto store = QueueStore::open(options, OpenMode::kReadWriteExisting);
  EXPECT_TRUE(store);
  if (!store) return -1;
  auto v = store->connection().query_int(sql);
  EXPECT_TRUE(v) << sql;
  return v && *v ? **v : -1;
}

}  // namespace ringmail::storage::testing

// Helpers shared by the Shard's source files (shard*.cc) that belong to no one part of it.
#pragma once

#include <chrono>

#include "engine/connection.h"
#include "engine/engine_options.h"

namespace ringmail::engine {

inline Clock::duration to_duration(Seconds s) {
  return std::chrono::duration_cast<Clock::duration>(s);
}

}  // namespace ringmail::engine

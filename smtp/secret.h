// Overwriting credentials before their memory is reused or freed, so a password does not
// linger in the heap (and in a core dump) after the AUTH exchange that needed it.
#pragma once

#include <string>

namespace ringmail::smtp {

// Zeroes every byte `s` holds, then empties it (capacity kept). The volatile stores cannot
// be dropped as dead, unlike a memset just before a free.
inline void wipe_secret(std::string& s) {
  volatile char* p = s.data();
  for (size_t i = 0; i < s.size(); ++i) p[i] = 0;
  s.clear();
}

}  // namespace ringmail::smtp

// A loopback TCP port that nothing listens on: bound, read back and closed at once. A
// connect to it is refused; a test that wants to listen there itself can bind it.
#pragma once

#include <cstdint>

namespace ringmail::test {

uint16_t unused_loopback_port();

}  // namespace ringmail::test

// `ringmail send`: runs the engine over a prepared plan, shows progress, turns SIGINT/SIGTERM
// into a drain (a second one aborts) and prints the summary.
#pragma once

#include "app/cli.h"

namespace ringmail::app {

// Returns the exit status: 0 all delivered, 1 some not, 2 usage/config/start-up error,
// 130 never (a second signal exits at once with 130).
int run_send(const SendFlags& flags);

}  // namespace ringmail::app

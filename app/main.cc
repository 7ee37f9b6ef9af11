// ringmail's entry point: parse the command line and run the command it names.
#include <exception>
#include <iostream>

#include "app/cli.h"
#include "app/send_command.h"

int main(int argc, char** argv) {
  try {
    auto flags = ringmail::app::parse_command_line(argc, argv, std::cout, std::cerr);
    if (!flags) return flags.error();
    return ringmail::app::run_send(*flags);
  } catch (const std::exception& e) {
    // Only start-up throws (house rule); anything reaching here is a start-up failure.
    std::cerr << "ringmail: " << e.what() << '\n';
    return 2;
  }
}

// ringmail's entry point: parse the command line and run the command it names.
#include <exception>
#include <iostream>
#include <variant>

#include "app/cli.h"
#include "app/send_command.h"
#include "app/storage_commands.h"

namespace {

struct Dispatch {
  int operator()(const ringmail::app::SendFlags& f) const { return ringmail::app::run_send(f); }
  int operator()(const ringmail::app::EnqueueFlags& f) const {
    return ringmail::app::run_enqueue(f);
  }
  int operator()(const ringmail::app::RunFlags& f) const { return ringmail::app::run_run(f); }
  int operator()(const ringmail::app::StatusFlags& f) const { return ringmail::app::run_status(f); }
  int operator()(const ringmail::app::SuppressFlags& f) const {
    return ringmail::app::run_suppress(f);
  }
  int operator()(const ringmail::app::PurgeFlags& f) const { return ringmail::app::run_purge(f); }
};

}  // namespace

int main(int argc, char** argv) {
  try {
    auto command = ringmail::app::parse_command(argc, argv, std::cout, std::cerr);
    if (!command) return command.error();
    return std::visit(Dispatch{}, *command);
  } catch (const std::exception& e) {
    // Only start-up throws (house rule); anything reaching here is a start-up failure.
    std::cerr << "ringmail: " << e.what() << '\n';
    return 2;
  }
}

// program_runner.h - executes programs in this process and writes their outcome logs.
//
// Ops run in the program's strict global order: the main thread hands each op to the thread that
// must execute it and waits until it is done, so every outcome is deterministic however the
// threads are scheduled. The log holds one line per set-up step and per op: the op's text and
// its outcome (return value and errno; for probes ok and the byte read, or the signal, si_code and
// faulting page). It never holds an address.
#pragma once

#include <functional>
#include <string>

#include "program.h"

namespace mpkdiff {

class ProgramRunner {
 public:
  using LineSink = std::function<void(const std::string &line)>;

  // Takes the reservation, installs the fault handlers, opens the pipes. Exits the process with
  // status 3 and a message if any of that fails.
  ProgramRunner();
  ~ProgramRunner();

  // Runs one program to completion, including unmapping everything it mapped. Each log line goes
  // to `sink` (when given) as soon as it is known, so a crash shows how far the program got.
  // Returns the whole log, lines ending in '\n'.
  std::string run(const Program &program, const LineSink &sink);

  // Executes one op on the calling thread and returns its outcome text.
  std::string execute(const Op &op);

 private:
  struct ProgramFiles;
  bool map_region(int index, const RegionSpec &region, ProgramFiles &files, std::string &outcome);

  int pipe_read_ = -1, pipe_write_ = -1;      // non-blocking: read()/write() ops and their drains
  int child_read_ = -1, child_write_ = -1;    // a forked child's probe result
  uint64_t seed_ = 0;
};

}  // namespace mpkdiff

// compare.h - `mpk_diff compare`: the same seeds run natively and under a preloaded library.
//
// The seeds are cut into chunks; each chunk runs as two child processes (`mpk_diff run`), one
// without LD_PRELOAD and one with it, up to `jobs` children at a time. Per-seed digests are
// compared; each mismatching seed is run again alone with --trace in both modes and shown side
// by side with the command lines that reproduce it. A child that crashes, exits early or times
// out is reported at the first seed it did not finish, and the rest of its chunk is run again
// in a new child, so one crash costs one seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "program.h"

namespace mpkdiff {

struct CompareOptions {
  std::string self;                 // absolute path of mpk_diff
  std::string preload;              // empty: both runs native (a determinism check)
  std::vector<std::string> env;     // extra K=V for the preloaded run
  uint64_t seed = 1;
  uint64_t count = 2000;
  uint64_t chunk = 250;
  int jobs = 2;
  uint32_t max_ops = 200;
  KindChoice kinds = KindChoice::kMixed;  // passed on to the children as --kind
  int timeout_s = 900;              // per child
  int details = 5;                  // mismatches shown in full
  std::string known;                // file of known divergences ("SEED reason" lines), or ""
};

// Returns the exit status: 0 no mismatch, 1 a mismatch, a crash or a failed run.
int compare(const CompareOptions &options);

}  // namespace mpkdiff

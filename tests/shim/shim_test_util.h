// shim_test_util.h - what the preload shim's tests need beyond the hardware suite's helpers
// (tests/hw/pkey_test_util.h): whether the shim runs with keys in this process, and its counters,
// read from the statistics page it publishes (core/src/stats_page.h).
#pragma once

#include <signal.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "pkey_test_util.h"
#include "stats_page.h"

namespace shimt {

// The shim's statistics page of this process, or nullptr (no shim, or no protection keys).
const mpk::StatsPage *stats();
// True when this process runs under the shim (LD_PRELOAD) on a CPU with usable protection keys.
bool under_shim();
bool emulating();
uint64_t counter(const std::atomic<uint64_t> mpk::Stats::*which);
uint64_t counter(mpk::Hot which);  // a per-thread counter (stats.h), summed

#define SHIM_SKIP_UNLESS_EMULATING()                                                               \
  do {                                                                                             \
    if (!::shimt::emulating())                                                                     \
      GTEST_SKIP() << "not running under libmpk_shim.so on a CPU with PKU: the emulated run "      \
                      "(mpk_shim_tests_qemu) covers it";                                           \
  } while (0)

// mpkt::HasExactly, with the protection key looked up only where the shim uses keys (without PKU
// smaps has no ProtectionKey line and every page is on the page table's rights).
inline ::testing::AssertionResult Has(void *p, int prot) {
  return mpkt::HasExactly(p, prot, mpkt::PkruCheck::kAtMost, emulating() ? mpkt::kLookUpKey : 0);
}

// An anonymous private mapping of `pages` pages, unmapped at scope exit.
class Mapping {
 public:
  explicit Mapping(size_t pages, int prot = PROT_READ | PROT_WRITE);
  ~Mapping();
  Mapping(const Mapping &) = delete;
  Mapping &operator=(const Mapping &) = delete;
  uint8_t *base() const { return base_; }
  size_t bytes() const { return bytes_; }
  void Forget() { base_ = nullptr; }

 private:
  uint8_t *base_ = nullptr;
  size_t bytes_;
};

// This test binary run again in a child process, with `filter` as its --gtest_filter and extra
// environment variables: how it ended (mpkt::DescribeWaitStatus) and what it printed (stdout and
// stderr together).
// The kernel's struct sigaction for rt_sigaction (not glibc's).
struct KernelSigaction {
  void (*handler)(int, siginfo_t *, void *);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

struct ChildResult {
  std::string status, output;
};
// Runs this test program again (a fork and exec) with only `filter`'s tests and `env` added;
// `ignored` signals are set to SIG_IGN for the new program (by the raw system call: as a parent
// without the shim would leave them).
ChildResult RunSelf(const std::string &filter, const std::vector<std::pair<std::string, std::string>> &env,
                    const std::vector<int> &ignored = {});
// The violation reports (JSON lines, "event":"violation") in a run's output.
size_t ViolationReports(const std::string &output);
// Writes text to a file in $TMPDIR (or /tmp) and returns its path.
std::string WriteTempFile(const std::string &name, const std::string &text);
// Runs under LD_PRELOAD=libmpk_shim.so, and not as one of RunSelf's children (marked by `child_var`)?
bool UnderShimAndNotChild(const char *child_var);

// mprotects the whole mapping between RW and R `times` times (ending RW): enough for the shim to
// make it a group.
void Toggle(const Mapping &m, int times = 3);

}  // namespace shimt

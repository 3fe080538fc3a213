#include "shim_test_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "stats_page_open.h"

namespace shimt {

const mpk::StatsPage *stats() { return mpk::own_stats_page(); }

bool under_shim() {
  const char *pre = getenv("LD_PRELOAD");
  return pre && strstr(pre, "libmpk_shim");
}

// The CPU decides: under the shim on a CPU with usable protection keys the shim must emulate
// (ShimActiveCheck fails the whole run if it does not). A child run by RunSelf may have been
// started to be inactive (a bad policy, a failed self-check): it goes by what its shim reports.
bool emulating() {
  if (getenv("MPK_SHIM_TEST_CHILD")) return stats() && stats()->active.load() != 0;
  return under_shim() && mpkt::pku_usable();
}

namespace {
class ShimActiveCheck : public ::testing::Environment {
 public:
  void SetUp() override {
    if (getenv("MPK_SHIM_TEST_CHILD") || !under_shim() || !mpkt::pku_usable()) return;
    ASSERT_NE(stats(), nullptr) << "this CPU has protection keys but the shim publishes no live statistics page";
    ASSERT_NE(stats()->active.load(), 0u) << "this CPU has protection keys but the shim is inactive: "
                                          << stats()->inactive_reason;
  }
};
[[maybe_unused]] ::testing::Environment *const g_shim_active_check =
    ::testing::AddGlobalTestEnvironment(new ShimActiveCheck);
}  // namespace

uint64_t counter(const std::atomic<uint64_t> mpk::Stats::*which) {
  return stats() ? (stats()->counters.*which).load() : 0;
}

uint64_t counter(mpk::Hot which) { return stats() ? mpk::hot_total(stats()->hot, which) : 0; }

Mapping::Mapping(size_t pages, int prot) : bytes_(pages * 4096) {
  void *p = mmap(nullptr, bytes_, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    ADD_FAILURE() << "mmap: " << strerror(errno);
    return;
  }
  base_ = static_cast<uint8_t *>(p);
}

Mapping::~Mapping() {
  if (base_) EXPECT_EQ(munmap(base_, bytes_), 0);
}

ChildResult RunSelf(const std::string &filter, const std::vector<std::pair<std::string, std::string>> &env,
                    const std::vector<int> &ignored) {
  int out[2];
  if (pipe(out) != 0) return {"pipe failed", ""};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    setenv("MPK_SHIM_TEST_CHILD", "1", 1);
    for (const auto &[k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    for (int sig : ignored) {
      KernelSigaction ign = {};
      ign.handler = reinterpret_cast<void (*)(int, siginfo_t *, void *)>(SIG_IGN);
      syscall(SYS_rt_sigaction, sig, &ign, nullptr, sizeof ign.mask);
    }
    std::string arg = "--gtest_filter=" + filter;
    execl("/proc/self/exe", "mpk_shim_tests", arg.c_str(), nullptr);
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  return {mpkt::DescribeWaitStatus(mpkt::WaitChild(pid, 120)), text};
}

size_t ViolationReports(const std::string &output) {
  size_t n = 0;
  for (size_t at = output.find("\"event\":\"violation\""); at != std::string::npos;
       at = output.find("\"event\":\"violation\"", at + 1))
    ++n;
  return n;
}

std::string WriteTempFile(const std::string &name, const std::string &text) {
  std::string path = std::string(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

bool UnderShimAndNotChild(const char *child_var) {
  return under_shim() && !getenv(child_var);
}

void Toggle(const Mapping &m, int times) {
  for (int i = 0; i < times; ++i) {
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ | PROT_WRITE), 0);
  }
}

}  // namespace shimt

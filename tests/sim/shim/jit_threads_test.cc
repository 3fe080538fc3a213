// jit_threads_test.cc - a JIT code area with thread toggles (mprotect = "thread") on simulated
// keys, under LD_PRELOAD=libmpk_shim.so and tests/sim/shim/jit_toggle.toml: a thread's mprotect
// read/write gives that thread alone the write right; a read/execute call on the part it opened,
// made by another thread, takes it away before that call returns (a sync, as the kernel's call
// would reach every thread). Each thread checks its own simulated register.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "shim_sim_util.h"

using namespace shimsim;

namespace {

constexpr size_t kArea = 256 * 1024;
constexpr int RX = PROT_READ | PROT_EXEC, RW = PROT_READ | PROT_WRITE;

class ShimSimJit : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!getenv("MPK_CONFIG")) GTEST_SKIP() << "run by mpk_sim_shim_jit_tests (with its policy)";
    if (!simulating()) FAIL() << "the shim does not run on simulated keys";
    alarm(300);
  }
  void TearDown() override { alarm(0); }
};

TEST_F(ShimSimJit, OnlyTheOpenerWritesAndAnotherThreadsCloseRevokes) {
  constexpr int kRounds = 2000;
  void *p = mmap(nullptr, kArea, RX, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto *code = static_cast<uint8_t *>(p);
  const int k = region_key(code);
  ASSERT_GT(k, 0) << "the mapping is not the policy's region";
  EXPECT_EQ(own_rights(k), 1) << "the default right is read";

  std::atomic<int> phase{0};  // 1: opener, open a page; 2: opened; 3: main closed it; 4: checked
  std::atomic<int> bad_open{0}, bad_closed{0}, main_bad{0};
  std::thread opener([&] {
    for (int r = 0; r < kRounds; ++r) {
      while (phase.load() != 1) spin_pause();
      size_t page = static_cast<size_t>(r % 64) * 4096;
      if (mprotect(code + page, 4096, RW) != 0 || own_rights(k) != 2) bad_open.fetch_add(1);
      code[page] = 0xc3;  // simulated keys refuse nothing: the register is what is checked
      phase.store(2);
      while (phase.load() != 3) spin_pause();
      if (own_rights(k) != 1) bad_closed.fetch_add(1);  // closed by main: write taken away
      phase.store(4);
    }
  });
  for (int r = 0; r < kRounds; ++r) {
    phase.store(1);
    while (phase.load() != 2) spin_pause();
    if (own_rights(k) != 1) main_bad.fetch_add(1);  // the opener's write is its own
    ASSERT_EQ(mprotect(code, kArea, RX), 0);        // closes the opener's page for everyone
    phase.store(3);
    while (phase.load() != 4) spin_pause();
  }
  opener.join();
  EXPECT_EQ(bad_open.load(), 0) << "the opener did not hold write after its own mprotect";
  EXPECT_EQ(bad_closed.load(), 0) << "the opener still held write after another thread closed its page";
  EXPECT_EQ(main_bad.load(), 0) << "another thread's write right reached the main thread";
  EXPECT_EQ(counter(mpk::Hot::legacy_emulated), counter(mpk::Hot::legacy_calls)) << "a call went to the kernel";
  munmap(p, kArea);
}

// A process that forks while its thread has a part of the code open (a forking server with a JIT):
// in the child the thread, with its new tid, still holds write while that part is open, and loses
// it when the part is closed.
TEST_F(ShimSimJit, AForkChildKeepsThePartsItsThreadHadOpen) {
  void *p = mmap(nullptr, kArea, RX, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto *code = static_cast<uint8_t *>(p);
  const int k = region_key(code);
  ASSERT_GT(k, 0);
  ASSERT_EQ(mprotect(code, 4096, RW), 0);  // a page in the first half stays open across fork
  ASSERT_EQ(own_rights(k), 2);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int status = 0;
    if (mprotect(code + kArea / 2, kArea / 2, RX) != 0) status = 1;  // the other half: still open
    else if (own_rights(k) != 2) status = 2;
    else if (mprotect(code, kArea / 2, RX) != 0) status = 3;  // now the page it opened
    else if (own_rights(k) != 1) status = 4;
    _exit(status);
  }
  int status = -1;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "child: " << (WIFEXITED(status) ? "failed check " + std::to_string(WEXITSTATUS(status)) : "killed");
  EXPECT_EQ(own_rights(k), 2) << "the parent's right changed with the child's calls";
  ASSERT_EQ(mprotect(code, kArea, RX), 0);
  EXPECT_EQ(own_rights(k), 1);
  munmap(p, kArea);
}

}  // namespace

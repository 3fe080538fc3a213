// stats_page_test.cc - the shim's live statistics page file (/dev/shm/libmpk-PID.stats) goes away
// with its process however it ends: normal exit, _exit (a fork child), or a fatal SIGSEGV.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "shim_sim_util.h"

using namespace shimsim;

namespace {

std::string page_file(pid_t pid) { return "/dev/shm/libmpk-" + std::to_string(pid) + ".stats"; }

// Forks a child that ends with `end`; returns its wait status and whether its page file existed
// while it ran (it checks that itself: exit code 3 if not).
int run_child(void (*end)()) {
  pid_t pid = fork();
  if (pid == 0) {
    if (access(page_file(getpid()).c_str(), F_OK) != 0) _exit(3);
    end();
    _exit(4);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_NE(access(page_file(pid).c_str(), F_OK), 0) << page_file(pid) << " was left behind";
  return status;
}

class StatsPageFile : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!simulating()) {
      if (getenv("MPK_SIMULATE")) FAIL() << "MPK_SIMULATE is set but the shim does not run on simulated keys";
      GTEST_SKIP() << "run under LD_PRELOAD=libmpk_shim.so with MPK_SIMULATE=1 (ctest does)";
    }
  }
};

TEST_F(StatsPageFile, GoesWithUnderscoreExit) {
  int st = run_child([] { _exit(0); });
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
}

TEST_F(StatsPageFile, GoesWithExit) {
  int st = run_child([] { std::exit(0); });
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
}

TEST_F(StatsPageFile, GoesWithAFatalFault) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer reports the fault itself and ends the child; the plain build runs this";
#endif
  int st = run_child([] {
    void *p = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *static_cast<volatile char *>(p) = 1;
  });
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV) << st;
}

}  // namespace

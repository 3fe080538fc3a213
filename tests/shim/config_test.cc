// A bad policy file stops the program before main with the file's position; a good one runs it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "pkey_test_util.h"
#include "shim_test_util.h"

namespace {

// Runs this test binary's `--version`-like no-op (gtest_list_tests) under MPK_CONFIG=path and
// returns (status, stderr).
std::pair<std::string, std::string> RunWithConfig(const std::string &path) {
  int err[2];
  if (pipe(err) != 0) return {"pipe failed", ""};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(err[1], 2);
    close(err[0]);
    setenv("MPK_CONFIG", path.c_str(), 1);
    execl("/proc/self/exe", "mpk_shim_tests", "--gtest_list_tests", "--gtest_filter=None", nullptr);
    _exit(127);
  }
  close(err[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(err[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(err[0]);
  return {mpkt::DescribeWaitStatus(mpkt::WaitChild(pid, 60)), text};
}

std::string WriteFile(const char *name, const std::string &text) {
  std::string path = std::string(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(Config, BadFileFailsClosedWithItsPosition) {
  if (!getenv("LD_PRELOAD") || !strstr(getenv("LD_PRELOAD"), "libmpk_shim"))
    GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  std::string path = WriteFile("mpk-shim-bad.toml", "mode = \"enforce\"\n\n[[region]]\nname = \"x\"\nsizee = 4\naction = \"emulate\"\n");
  auto [status, err] = RunWithConfig(path);
  EXPECT_EQ(status, "exit 1");
  EXPECT_NE(err.find(path + ":5:1:"), std::string::npos) << err;
  EXPECT_NE(err.find("not started"), std::string::npos) << err;
}

TEST(Config, PassthroughOnErrorRunsTheProgram) {
  if (!getenv("LD_PRELOAD") || !strstr(getenv("LD_PRELOAD"), "libmpk_shim"))
    GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  std::string path = WriteFile("mpk-shim-pass.toml", "on_error = \"passthrough\"\nkey_budget = 99\n");
  auto [status, err] = RunWithConfig(path);
  EXPECT_EQ(status, "exit 0") << err;
  EXPECT_NE(err.find(":2:"), std::string::npos) << err;
}

}  // namespace

namespace {

// Runs in a child started by Config.EagerGrantsReachIdleThreads, under its policy.
TEST(EagerChild, GrantReachesAThreadThatNeverTouchedTheRange) {
  if (!getenv("MPK_SHIM_TEST_EAGER")) GTEST_SKIP() << "run by Config.EagerGrantsReachIdleThreads";
  SHIM_SKIP_UNLESS_EMULATING();
  mpkt::install_probe_handler();
  void *p = mmap(nullptr, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  mpkt::Worker w(mpkt::Worker::Wait::kSpin);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(mprotect(p, 4 * 4096, PROT_NONE), 0);
    ASSERT_EQ(mprotect(p, 4 * 4096, PROT_READ | PROT_WRITE), 0);
  }
  int key = mpkt::pkey_of(p);
  ASSERT_GT(key, 0);
  ASSERT_EQ(mprotect(p, 4 * 4096, PROT_NONE), 0);
  ASSERT_EQ(mprotect(p, 4 * 4096, PROT_READ), 0);  // a grant: eager, so the worker holds it now
  w.Run([&] { EXPECT_EQ(mpkt::pkru_prot(mpkt::rdpkru(), key), PROT_READ) << "without touching the range"; });
  ASSERT_EQ(munmap(p, 4 * 4096), 0);
}

TEST(Config, EagerGrantsReachIdleThreads) {
  if (!getenv("LD_PRELOAD") || !strstr(getenv("LD_PRELOAD"), "libmpk_shim") || getenv("MPK_SHIM_TEST_EAGER"))
    GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  std::string path = WriteFile("mpk-shim-eager.toml",
                               "[[region]]\nname = \"hot\"\nmin_size = \"16K\"\nmax_size = \"16K\"\n"
                               "action = \"emulate\"\ngrants = \"eager\"\n");
  int err[2];
  ASSERT_EQ(pipe(err), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(err[1], 1);
    dup2(err[1], 2);
    setenv("MPK_CONFIG", path.c_str(), 1);
    setenv("MPK_SHIM_TEST_EAGER", "1", 1);
    execl("/proc/self/exe", "mpk_shim_tests", "--gtest_filter=EagerChild.*", nullptr);
    _exit(127);
  }
  close(err[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(err[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(err[0]);
  EXPECT_EQ(mpkt::DescribeWaitStatus(mpkt::WaitChild(pid, 120)), "exit 0") << text;
}

}  // namespace

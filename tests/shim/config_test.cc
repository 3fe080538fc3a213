// A bad policy file stops the program before main with the file's position; a good one runs it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "pkey_test_util.h"

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

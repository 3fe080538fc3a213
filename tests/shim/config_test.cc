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

// A child under a policy: the gtest filter "None" runs nothing, so the status is the shim's doing.
shimt::ChildResult RunWithConfig(const std::string &path) { return shimt::RunSelf("None", {{"MPK_CONFIG", path}}); }

TEST(Config, BadFileFailsClosedWithItsPosition) {
  if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_EAGER")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  std::string path = shimt::WriteTempFile("mpk-shim-bad.toml", "mode = \"enforce\"\n\n[[region]]\nname = \"x\"\nsizee = 4\naction = \"emulate\"\n");
  auto [status, err] = RunWithConfig(path);
  EXPECT_EQ(status, "exit 1");
  EXPECT_NE(err.find(path + ":5:1:"), std::string::npos) << err;
  EXPECT_NE(err.find("not started"), std::string::npos) << err;
}

TEST(Config, PassthroughOnErrorRunsTheProgram) {
  if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_EAGER")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  std::string path = shimt::WriteTempFile("mpk-shim-pass.toml", "on_error = \"passthrough\"\nkey_budget = 99\n");
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
  if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_EAGER")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  std::string path = shimt::WriteTempFile("mpk-shim-eager.toml",
                                          "[[region]]\nname = \"hot\"\nmin_size = \"16K\"\nmax_size = \"16K\"\n"
                                          "action = \"emulate\"\ngrants = \"eager\"\n");
  shimt::ChildResult r = shimt::RunSelf("EagerChild.*", {{"MPK_CONFIG", path}, {"MPK_SHIM_TEST_EAGER", "1"}});
  EXPECT_EQ(r.status, "exit 0") << r.output;
}

}  // namespace

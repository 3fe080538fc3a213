// Isolation policies on threads: rights by start routine and by thread name (re-evaluated when a
// thread renames itself), and what a violation does in enforce and in audit mode. Each case runs
// in a child process under its own policy.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "pkey_test_util.h"
#include "shim_test_util.h"

namespace {

uint8_t *g_region;

}  // namespace

// Start routines the policy names (external: their symbols must be found).
extern "C" __attribute__((noinline)) void *mpk_test_allowed_worker(void *) {
  g_region[1] = 0x11;
  return nullptr;
}

extern "C" __attribute__((noinline)) void *mpk_test_other_worker(void *) {
  pthread_setname_np(pthread_self(), "renamed-ok");
  volatile uint8_t v = g_region[1];  // the name's right: read
  (void)v;
  g_region[2] = 0x22;  // not allowed: a violation
  return nullptr;
}

namespace {

TEST(IsolationChild, StartRoutineAndNameRules) {
  if (!getenv("MPK_SHIM_TEST_ISOLATION")) GTEST_SKIP() << "run by Isolation.*";
  SHIM_SKIP_UNLESS_EMULATING();
  pthread_setname_np(pthread_self(), "iso-main");  // the main thread's name rule
  void *p = mmap(nullptr, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  g_region = static_cast<uint8_t *>(p);
  g_region[0] = 1;
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, mpk_test_allowed_worker, nullptr), 0);
  pthread_join(t, nullptr);
  EXPECT_EQ(g_region[1], 0x11);
  ASSERT_EQ(pthread_create(&t, nullptr, mpk_test_other_worker, nullptr), 0);
  pthread_join(t, nullptr);
  fprintf(stderr, "child: still running, byte 2 = %d\n", g_region[2]);
}

shimt::ChildResult RunIsolationChild(const char *mode) {
  std::string path = shimt::WriteTempFile(
      std::string("mpk-shim-iso-") + mode + ".toml",
      std::string("[[region]]\nname = \"iso\"\nmin_size = \"12K\"\nmax_size = \"12K\"\nanonymous = true\n"
                  "action = \"isolate\"\ndefault = \"none\"\nenforce = \"") +
          mode +
          "\"\n[[region.thread]]\nstart = \"mpk_test_allowed_worker\"\nright = \"rw\"\n"
          "[[region.thread]]\nname = \"renamed-ok\"\nright = \"r\"\n"
          "[[region.thread]]\nname = \"iso-main\"\nright = \"rw\"\n");
  return shimt::RunSelf("IsolationChild.*", {{"MPK_CONFIG", path}, {"MPK_SHIM_TEST_ISOLATION", "1"}});
}

class Isolation : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_ISOLATION")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
    SHIM_SKIP_UNLESS_EMULATING();
  }
};

TEST_F(Isolation, EnforceStopsTheProgramAtTheFirstViolation) {
  shimt::ChildResult r = RunIsolationChild("enforce");
  EXPECT_EQ(r.status, "killed by signal 11 (Segmentation fault)") << r.output;
  EXPECT_NE(r.output.find("mpk: violation: thread "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("'renamed-ok' wrote to region 'iso'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"offset\":2,\"access\":\"write\",\"mode\":\"enforce\""), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("child: still running"), std::string::npos) << r.output;
}

TEST_F(Isolation, AuditReportsAndLetsTheAccessThrough) {
  shimt::ChildResult r = RunIsolationChild("audit");
  EXPECT_EQ(r.status, "exit 0") << r.output;
  EXPECT_NE(r.output.find("'renamed-ok' wrote to region 'iso'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("child: still running, byte 2 = 34"), std::string::npos) << r.output;
  // The allowed thread, the read under the name's right and the main thread: no report.
  EXPECT_EQ(shimt::ViolationReports(r.output), 1u) << r.output;
}

}  // namespace

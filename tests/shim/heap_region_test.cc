// Heap regions (policy `heap = true`) with real keys: the program's matching allocations carry
// the region's key, the threads the rules name use them, and another thread's access is a
// violation, stopped in enforce mode and reported once in audit mode. Each case runs in a child
// process under its own policy.
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "pkey_test_util.h"
#include "shim_test_util.h"

namespace {

constexpr size_t kBlock = 300 << 10;
unsigned char *g_block;

}  // namespace

extern "C" __attribute__((noinline)) void *mpk_test_heap_writer(void *) {
  std::memset(g_block, 0x42, kBlock);  // its rule: rw
  return nullptr;
}

extern "C" __attribute__((noinline)) void *mpk_test_heap_outsider(void *) {
  // A new thread starts with its creator's name ("heap-main", a rule's); renamed, no rule names
  // it: the default, none.
  pthread_setname_np(pthread_self(), "heap-outsider");
  volatile unsigned char v = g_block[100];
  (void)v;
  return nullptr;
}

namespace {

TEST(HeapRegionChild, RulesDecideWhoUsesTheBlocks) {
  if (!getenv("MPK_SHIM_TEST_HEAP")) GTEST_SKIP() << "run by HeapRegion.*";
  SHIM_SKIP_UNLESS_EMULATING();
  pthread_setname_np(pthread_self(), "heap-main");
  g_block = static_cast<unsigned char *>(malloc(kBlock));
  ASSERT_NE(g_block, nullptr);
  void *other = malloc(1000);  // too small: glibc's, on key 0
  int key = mpkt::pkey_of(g_block);
  fprintf(stderr, "child: block key %d, small key %d\n", key, mpkt::pkey_of(other));
  EXPECT_GT(key, 0) << "the block is on the region's key";
  EXPECT_EQ(mpkt::pkey_of(other), 0);
  g_block[0] = 1;  // the main thread's rule: rw
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, mpk_test_heap_writer, nullptr), 0);
  pthread_join(t, nullptr);
  EXPECT_EQ(g_block[kBlock - 1], 0x42);
  ASSERT_EQ(pthread_create(&t, nullptr, mpk_test_heap_outsider, nullptr), 0);
  pthread_join(t, nullptr);
  fprintf(stderr, "child: still running, byte 100 = %d\n", g_block[100]);
  free(g_block);
  free(other);
}

shimt::ChildResult RunHeapChild(const char *mode) {
  std::string path = shimt::WriteTempFile(
      std::string("mpk-shim-heap-") + mode + ".toml",
      std::string("[[region]]\nname = \"heap\"\naction = \"isolate\"\nheap = true\nmin_size = \"256K\"\n"
                  "module = \"mpk_shim_tests\"\ndefault = \"none\"\nenforce = \"") +
          mode +
          "\"\n[[region.thread]]\nstart = \"mpk_test_heap_writer\"\nright = \"rw\"\n"
          "[[region.thread]]\nname = \"heap-main\"\nright = \"rw\"\n");
  return shimt::RunSelf("HeapRegionChild.*", {{"MPK_CONFIG", path}, {"MPK_SHIM_TEST_HEAP", "1"}});
}

class HeapRegion : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_HEAP")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
    SHIM_SKIP_UNLESS_EMULATING();
  }
};

TEST_F(HeapRegion, EnforceStopsAThreadTheRulesDoNotName) {
  shimt::ChildResult r = RunHeapChild("enforce");
  EXPECT_EQ(r.status, "killed by signal 11 (Segmentation fault)") << r.output;
  EXPECT_NE(r.output.find("read from region 'heap'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"offset\":100,\"access\":\"read\",\"mode\":\"enforce\""), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("child: still running"), std::string::npos) << r.output;
}

TEST_F(HeapRegion, AuditReportsOnlyTheOutsider) {
  shimt::ChildResult r = RunHeapChild("audit");
  EXPECT_EQ(r.status, "exit 0") << r.output;
  EXPECT_NE(r.output.find("child: still running, byte 100 = 66"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("read from region 'heap'"), std::string::npos) << r.output;
  EXPECT_EQ(shimt::ViolationReports(r.output), 1u) << r.output;
}

}  // namespace

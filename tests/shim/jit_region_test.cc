// A JIT's code area under an isolate region with mprotect = "thread": the program's mprotect
// calls change the calling thread's right only. The thread that opened a part for writing may
// write while any part it opened is open; every thread may read and run the code; another thread
// that writes is a violation (enforce: stopped; audit: reported and let through). Each case runs
// in a child process under its own policy.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "shim_test_util.h"

namespace {

constexpr size_t kArea = 256 * 1024;
constexpr size_t kHalf = kArea / 2;
constexpr size_t kPage = 4096;
volatile uint8_t *g_code;

void *intruder(void *) {
  pthread_setname_np(pthread_self(), "jit-intruder");
  volatile uint8_t v = g_code[0];  // reading the code: the default right
  (void)v;
  g_code[2] = 0x5a;  // writing it: never given to this thread
  return nullptr;
}

#define CHECK_OR_EXIT(cond)                                       \
  do {                                                            \
    if (!(cond)) {                                                \
      fprintf(stderr, "child: check failed: %s\n", #cond);        \
      _exit(3);                                                   \
    }                                                             \
  } while (0)

TEST(JitChild, OnlyTheWriterWrites) {
  if (!getenv("MPK_SHIM_TEST_JIT")) GTEST_SKIP() << "run by JitRegion.*";
  SHIM_SKIP_UNLESS_EMULATING();
  void *p = mmap(nullptr, kArea, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK_OR_EXIT(p != MAP_FAILED);
  auto *code = static_cast<uint8_t *>(p);
  g_code = code;
  // Fill, seal, run: the whole area, as a JIT starts.
  CHECK_OR_EXIT(mprotect(code, kArea, PROT_READ | PROT_WRITE) == 0);
  code[0] = 0xc3;  // ret
  CHECK_OR_EXIT(mprotect(code, kArea, PROT_READ | PROT_EXEC) == 0);
  reinterpret_cast<void (*)()>(code)();
  // Two parts open, one in each half (YJIT's two code blocks), then the second half closed: the
  // first part is still open, so writing it is what the kernel would allow too.
  CHECK_OR_EXIT(mprotect(code, kPage, PROT_READ | PROT_WRITE) == 0);
  CHECK_OR_EXIT(mprotect(code + kHalf, kPage, PROT_READ | PROT_WRITE) == 0);
  CHECK_OR_EXIT(mprotect(code + kHalf, kHalf, PROT_READ | PROT_EXEC) == 0);
  code[1] = 0x90;
  // Another thread while the first part is open: it may read the code, not write it.
  pthread_t t;
  CHECK_OR_EXIT(pthread_create(&t, nullptr, intruder, nullptr) == 0);
  pthread_join(t, nullptr);
  CHECK_OR_EXIT(mprotect(code, kHalf, PROT_READ | PROT_EXEC) == 0);
  // A call without read rights goes to the kernel for every thread; read rights back, it reads.
  CHECK_OR_EXIT(mprotect(code + 16 * kPage, kPage, PROT_NONE) == 0);
  CHECK_OR_EXIT(mprotect(code + 16 * kPage, kPage, PROT_READ | PROT_EXEC) == 0);
  volatile uint8_t v = code[16 * kPage];
  (void)v;
  reinterpret_cast<void (*)()>(code)();
  fprintf(stderr, "child: still running, byte 1 = %d, byte 2 = %d\n", code[1], code[2]);
}

shimt::ChildResult RunJitChild(const char *mode) {
  std::string path = shimt::WriteTempFile(
      std::string("mpk-shim-jit-") + mode + ".toml",
      std::string("[[region]]\nname = \"jit\"\naction = \"isolate\"\nmprotect = \"thread\"\n"
                  "anonymous = true\nprot = \"rx\"\nmin_size = \"256K\"\nmax_size = \"256K\"\n"
                  "default = \"r\"\nenforce = \"") +
          mode + "\"\n");
  return shimt::RunSelf("JitChild.*", {{"MPK_CONFIG", path}, {"MPK_SHIM_TEST_JIT", "1"}});
}

size_t Count(const std::string &text, const std::string &what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class JitRegion : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_JIT")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
    SHIM_SKIP_UNLESS_EMULATING();
  }
};

TEST_F(JitRegion, EnforceStopsAnotherThreadWritingCode) {
  shimt::ChildResult r = RunJitChild("enforce");
  EXPECT_EQ(r.status, "killed by signal 11 (Segmentation fault)") << r.output;
  EXPECT_NE(r.output.find("'jit-intruder' wrote to region 'jit'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"offset\":2,\"access\":\"write\",\"mode\":\"enforce\""), std::string::npos) << r.output;
  EXPECT_EQ(Count(r.output, "\"event\":\"violation\""), 1u) << r.output;  // the writer's own writes: none
  EXPECT_EQ(r.output.find("child: still running"), std::string::npos) << r.output;
}

TEST_F(JitRegion, AuditReportsOnlyTheOtherThread) {
  shimt::ChildResult r = RunJitChild("audit");
  EXPECT_EQ(r.status, "exit 0") << r.output;
  EXPECT_NE(r.output.find("child: still running, byte 1 = 144, byte 2 = 90"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("'jit-intruder' wrote to region 'jit'"), std::string::npos) << r.output;
  EXPECT_EQ(Count(r.output, "\"event\":\"violation\""), 1u) << r.output;
}

}  // namespace

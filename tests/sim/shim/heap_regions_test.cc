// heap_regions_test.cc - heap regions (policy `heap = true`) on simulated keys, under
// LD_PRELOAD=libmpk_shim.so and tests/sim/shim/heap_regions.toml: which allocations a region
// takes (size, calling module, call stack), the allocator's contract on its blocks (free, realloc,
// calloc, the aligned forms, malloc_usable_size, bad frees), threads, fork, and each thread's
// right on the region's key in its own simulated register.
#include <gtest/gtest.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "shim_sim_util.h"

using namespace shimsim;

// Allocations made with these on the stack match the "secrets" region's caller criterion.
extern "C" __attribute__((noinline)) void *mpk_test_secret_alloc(size_t n) {
  void *p = malloc(n);
  asm volatile("" ::"r"(p) : "memory");  // not a tail call: this frame stays on the stack
  return p;
}
extern "C" __attribute__((noinline)) void *mpk_test_secret_calloc(size_t n) {
  void *p = calloc(1, n);
  asm volatile("" ::"r"(p) : "memory");
  return p;
}

namespace {

constexpr size_t kSlab = 300 << 10;

uint64_t allocs() { return counter(&mpk::Stats::region_allocs); }
uint64_t frees() { return counter(&mpk::Stats::region_frees); }

// The stats page's row for a region: its key (> 0 resident) and first range.
const mpk::RegionSlot *row(const char *name) {
  if (!stats()) return nullptr;
  for (const mpk::RegionSlot &s : stats()->regions)
    if (s.used.load(std::memory_order_acquire) && strcmp(s.name, name) == 0) return &s;
  return nullptr;
}

class ShimSimHeap : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!getenv("MPK_CONFIG")) GTEST_SKIP() << "run by mpk_sim_shim_heap_tests (with its policy)";
    if (!simulating()) FAIL() << "the shim does not run on simulated keys";
    alarm(300);
  }
  void TearDown() override { alarm(0); }
};

TEST_F(ShimSimHeap, TheProgramsOwnLargeAllocationsComeFromTheRegion) {
  uint64_t a0 = allocs(), f0 = frees();
  void *p = malloc(kSlab);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(allocs() - a0, 1u) << "a 300 KiB malloc from the test program is the region's";
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (64 << 10), 0u) << "a large block is a span of its own";
  EXPECT_EQ(malloc_usable_size(p), size_t{320} << 10);
  const mpk::RegionSlot *r = row("slabs");
  ASSERT_NE(r, nullptr) << "the region is listed once it has memory";
  EXPECT_STREQ(r->kind, "isolate-heap");
  EXPECT_GT(r->key.load(), 0);
  EXPECT_EQ(own_rights(r->key.load()), 2) << "the default right is rw";
  std::memset(p, 0xab, kSlab);
  free(p);
  EXPECT_EQ(frees() - f0, 1u);
}

TEST_F(ShimSimHeap, EverythingElseIsGlibcs) {
  uint64_t a0 = allocs();
  void *small = malloc(1000);                  // too small for "slabs", not from a secret function
  void *huge = malloc(size_t{16} << 20);       // over max_size
  std::string big(kSlab, 'x');                 // the allocation is libstdc++'s
  char *dup = strdup(big.c_str());             // ... and this one libc's
  ASSERT_TRUE(small && huge && dup);
  EXPECT_EQ(allocs(), a0) << "only the program's own 256K..8M allocations match";
  EXPECT_EQ(malloc_usable_size(small) >= 1000, true);
  free(small);
  free(huge);
  free(dup);
}

TEST_F(ShimSimHeap, ACallerCriterionMatchesOnlyInsideTheNamedFunctions) {
  uint64_t a0 = allocs(), f0 = frees();
  void *plain = malloc(64);
  EXPECT_EQ(allocs(), a0);
  auto *secret = static_cast<char *>(mpk_test_secret_alloc(64));
  ASSERT_NE(secret, nullptr);
  EXPECT_EQ(allocs() - a0, 1u);
  EXPECT_EQ(malloc_usable_size(secret), 64u);
  std::memset(secret, 0x5a, 64);
  free(secret);
  // The block is reused: calloc zeroes it.
  auto *zeroed = static_cast<unsigned char *>(mpk_test_secret_calloc(64));
  ASSERT_NE(zeroed, nullptr);
  EXPECT_EQ(static_cast<void *>(zeroed), static_cast<void *>(secret)) << "the freed block comes back";
  for (int i = 0; i < 64; ++i) ASSERT_EQ(zeroed[i], 0) << i;
  free(zeroed);
  free(plain);
  EXPECT_EQ(frees() - f0, 2u);
}

TEST_F(ShimSimHeap, ReallocKeepsABlockInItsHeap) {
  auto *p = static_cast<unsigned char *>(malloc(kSlab));
  ASSERT_NE(p, nullptr);
  for (size_t i = 0; i < kSlab; ++i) p[i] = static_cast<unsigned char>(i * 7);
  EXPECT_EQ(realloc(p, kSlab - 1000), p) << "shrinking stays in place";
  uint64_t a0 = allocs(), f0 = frees();
  auto *q = static_cast<unsigned char *>(realloc(p, size_t{2} << 20));
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(allocs() - a0, 1u);
  EXPECT_EQ(frees() - f0, 1u);
  for (size_t i = 0; i < kSlab; ++i) ASSERT_EQ(q[i], static_cast<unsigned char>(i * 7)) << i;
  EXPECT_GE(malloc_usable_size(q), size_t{2} << 20);
  errno = 0;
  EXPECT_EQ(realloc(q, 0), nullptr) << "realloc(p, 0) frees p";
  EXPECT_EQ(frees() - f0, 2u);
  // realloc(NULL, n) is its caller's malloc.
  void *r = realloc(nullptr, kSlab);
  EXPECT_EQ(allocs() - a0, 2u);
  free(r);
}

TEST_F(ShimSimHeap, AlignedFormsHonourTheirAlignment) {
  uint64_t a0 = allocs();
  std::vector<void *> blocks;
  void *p = memalign(4096, kSlab);
  blocks.push_back(p);
  p = aligned_alloc(32 << 10, kSlab);
  blocks.push_back(p);
  ASSERT_EQ(posix_memalign(&p, 64 << 10, kSlab), 0);
  blocks.push_back(p);
  blocks.push_back(valloc(kSlab));
  blocks.push_back(pvalloc(kSlab + 1));
  EXPECT_EQ(allocs() - a0, blocks.size());
  for (void *b : blocks) {
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 4096, 0u);
    std::memset(b, 1, kSlab);
    free(b);
  }
  EXPECT_EQ(posix_memalign(&p, 24, kSlab), EINVAL) << "glibc's answer for an alignment that is not a power of two";
  void *q = nullptr;
  ASSERT_EQ(posix_memalign(&q, size_t{1} << 20, kSlab), 0) << "over 64 KiB: glibc serves it";
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q) % (size_t{1} << 20), 0u);
  free(q);
}

TEST_F(ShimSimHeap, ABadFreeIsReportedAndHarmless) {
  auto *p = static_cast<char *>(malloc(kSlab));
  ASSERT_NE(p, nullptr);
  uint64_t bad0 = counter(&mpk::Stats::bad_frees);
  char *inside = p + 64;
  asm volatile("" : "+r"(inside));  // hidden from the compiler's own free() checks
  free(inside);  // inside a block
  EXPECT_EQ(counter(&mpk::Stats::bad_frees) - bad0, 1u);
  std::memset(p, 3, kSlab);  // still the program's
  free(p);
  asm volatile("" : "+r"(p));
  free(p);  // twice
  EXPECT_EQ(counter(&mpk::Stats::bad_frees) - bad0, 2u);
  void *again = malloc(kSlab);  // the heap still works
  ASSERT_NE(again, nullptr);
  std::memset(again, 4, kSlab);
  free(again);
}

TEST_F(ShimSimHeap, ThreadsAllocateAndFreeConcurrently) {
  constexpr int kThreads = 4, kRounds = 300;
  std::atomic<int> bad{0};
  uint64_t a0 = allocs(), f0 = frees();
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      std::vector<unsigned char *> live;
      for (int r = 0; r < kRounds; ++r) {
        size_t n = kSlab + static_cast<size_t>((t * 131 + r * 17) % 4096);
        auto *p = static_cast<unsigned char *>(malloc(n));
        auto *s = static_cast<unsigned char *>(mpk_test_secret_alloc(48));
        if (!p || !s) { bad.fetch_add(1); continue; }
        std::memset(p, t + 1, n);
        std::memset(s, t + 1, 48);
        live.push_back(p);
        if (s[47] != t + 1) bad.fetch_add(1);
        free(s);
        if (live.size() > 4) {
          unsigned char *old = live.front();
          live.erase(live.begin());
          if (old[0] != t + 1 || old[kSlab - 1] != t + 1) bad.fetch_add(1);
          free(old);
        }
      }
      for (unsigned char *p : live) free(p);
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(allocs() - a0, uint64_t{2 * kThreads * kRounds});
  EXPECT_EQ(frees() - f0, uint64_t{2 * kThreads * kRounds});
}

TEST_F(ShimSimHeap, AThreadTheRulesExcludeHasNoRight) {
  void *p = malloc(kSlab);  // the region exists
  const mpk::RegionSlot *r = row("slabs");
  ASSERT_NE(r, nullptr);
  int k = r->key.load();
  ASSERT_GT(k, 0);
  int before = -1, after = -1;
  std::thread t([&] {
    before = own_rights(k);
    pthread_setname_np(pthread_self(), "heap-outsider");
    after = own_rights(k);
  });
  t.join();
  EXPECT_EQ(before, 2) << "a new thread gets the default right";
  EXPECT_EQ(after, 0) << "renamed to a name the rules exclude, it loses it";
  EXPECT_EQ(own_rights(k), 2);
  free(p);
}

TEST_F(ShimSimHeap, AForkChildUsesTheRegionHeap) {
  auto *kept = static_cast<unsigned char *>(malloc(kSlab));
  ASSERT_NE(kept, nullptr);
  std::memset(kept, 9, kSlab);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int rc = 0;
    if (kept[kSlab - 1] != 9) rc |= 1;
    // (The child has a statistics page of its own, which this process's cached view is not.)
    auto *p = static_cast<unsigned char *>(malloc(kSlab));
    if (!p || malloc_usable_size(p) != size_t{320} << 10) rc |= 2;  // a 64 KiB-rounded span: the region's
    if (p) {
      std::memset(p, 7, kSlab);
      free(p);
    }
    free(kept);
    _exit(rc);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the parent's block, 2: a new block in the child";
  EXPECT_EQ(kept[0], 9);
  free(kept);
}

}  // namespace

// malloc_test.cc - mpk_malloc/mpk_free: memory inside the group, 16-byte aligned, metadata
// outside the group (free works while it is closed), invalid frees refused and reported.
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "pkey_test_util.h"

using namespace mpkt;

namespace {

struct Block {
  uint8_t *p;
  size_t n;
  uint8_t seed;
};

uint32_t Lcg(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

void Fill(const Block &b) {
  for (size_t i = 0; i < b.n; ++i) b.p[i] = static_cast<uint8_t>(b.seed + i * 13);
}
bool Intact(const Block &b) {
  for (size_t i = 0; i < b.n; ++i)
    if (b.p[i] != static_cast<uint8_t>(b.seed + i * 13)) return false;
  return true;
}
bool Overlap(const Block &a, const Block &b) { return a.p < b.p + b.n && b.p < a.p + a.n; }
}  // namespace

class Malloc : public mpkt::MpkHwTest {};

TEST_F(Malloc, CreatesAClosedGroupWithAReadWriteCeiling) {
  const int v = mpkt::FreshVkey();
  auto *p = static_cast<uint8_t *>(mpk_malloc(v, 100));
  ASSERT_NE(p, nullptr) << strerror(errno);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u);
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact)) << "a heap group starts closed";
  Worker w;
  w.Run([&] { EXPECT_TRUE(HasExactly(p + 99, PROT_NONE)); });
  ASSERT_EQ(mpk_mprotect(v, RW), 0) << "the ceiling must be READ|WRITE: " << strerror(errno);
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  w.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(p + 50, RW));
    EXPECT_TRUE(HasExactly(p + 99, RW));
  });
  ASSERT_EQ(mpk_mprotect(v, PROT_READ), 0);
  w.Run([&] { EXPECT_TRUE(HasExactly(p + 99, PROT_READ)); });
  ASSERT_EQ(mpk_munmap(v), 0);
  EXPECT_FALSE(mpkt::is_mapped(p));
}

TEST_F(Malloc, AlignedAndInsideTheGroup) {
  Group g(1);  // an mmap'ed page of the same group, to compare keys with
  Group other(1);
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(other.ok());
  const size_t sizes[] = {1, 7, 15, 16, 17, 100, 1000, 4095, 4096, 4097, 65536, 1 << 20};
  std::vector<Block> blocks;
  for (size_t n : sizes) {
    auto *p = static_cast<uint8_t *>(mpk_malloc(g.vkey(), n));
    ASSERT_NE(p, nullptr) << "size " << n << ": " << strerror(errno);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << "size " << n;
    blocks.push_back({p, n, static_cast<uint8_t>(n)});
  }
  auto *q = static_cast<uint8_t *>(mpk_malloc(other.vkey(), 64));
  ASSERT_NE(q, nullptr);
  // Closed: every block faults at both ends.
  for (const Block &b : blocks) {
    EXPECT_TRUE(HasExactly(b.p, PROT_NONE)) << "block of " << b.n;
    EXPECT_TRUE(HasExactly(b.p + b.n - 1, PROT_NONE)) << "end of block of " << b.n;
  }
  // Pinned by domains, the blocks carry the group's key, not the other group's.
  ASSERT_EQ(mpk_begin(g.vkey(), RW), 0);
  ASSERT_EQ(mpk_begin(other.vkey(), RW), 0);
  int k = mpkt::pkey_of(g.base());
  int ko = mpkt::pkey_of(other.base());
  EXPECT_GT(k, 0);
  EXPECT_GT(ko, 0);
  EXPECT_NE(k, ko);
  for (const Block &b : blocks) {
    EXPECT_EQ(mpkt::pkey_of(b.p), k) << "block of " << b.n << " is not in its group's pages";
    EXPECT_EQ(mpkt::pkey_of(b.p + b.n - 1), k) << "end of block of " << b.n;
  }
  EXPECT_EQ(mpkt::pkey_of(q), ko);
  for (const Block &b : blocks) Fill(b);
  for (size_t i = 0; i < blocks.size(); ++i) {
    EXPECT_TRUE(Intact(blocks[i])) << "block of " << blocks[i].n << " overwritten";
    for (size_t j = i + 1; j < blocks.size(); ++j)
      EXPECT_FALSE(Overlap(blocks[i], blocks[j])) << blocks[i].n << " and " << blocks[j].n;
  }
  // Only the group's own right matters: closing g while other stays open.
  ASSERT_EQ(mpk_end(g.vkey()), 0);
  for (const Block &b : blocks) EXPECT_TRUE(HasExactly(b.p + b.n / 2, PROT_NONE));
  EXPECT_TRUE(HasExactly(q, RW, PkruCheck::kExact));
  ASSERT_EQ(mpk_end(other.vkey()), 0);
  for (const Block &b : blocks) mpk_free(g.vkey(), b.p);
  mpk_free(other.vkey(), q);
}

// Thousands of blocks of mixed sizes: no overlap, contents kept through frees and reuse; frees
// happen while the group is closed and print nothing.
TEST_F(Malloc, GrowsAndFreesWhileClosed) {
  Group g(1);
  ASSERT_TRUE(g.ok());
  const int v = g.vkey();
  uint32_t seed = 12345;
  std::vector<Block> live;
  auto alloc_some = [&](int count) {
    for (int i = 0; i < count; ++i) {
      size_t n = 1 + Lcg(&seed) % 700;
      if (i % 97 == 0) n = 20000 + Lcg(&seed) % 50000;
      auto *p = static_cast<uint8_t *>(mpk_malloc(v, n));
      ASSERT_NE(p, nullptr) << "allocation " << i << " of " << n << ": " << strerror(errno);
      ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u);
      live.push_back({p, n, static_cast<uint8_t>(Lcg(&seed))});
    }
  };
  alloc_some(2000);
  ASSERT_EQ(mpk_begin(v, RW), 0);
  for (const Block &b : live) Fill(b);
  ASSERT_EQ(mpk_end(v), 0);
  // Closed now. Sampled blocks fault.
  for (size_t i = 0; i < live.size(); i += 101) EXPECT_TRUE(HasExactly(live[i].p, PROT_NONE));
  // Free every other block while closed; no report may be printed.
  std::vector<Block> kept;
  std::string report = mpkt::CaptureStderr([&] {
    for (size_t i = 0; i < live.size(); ++i) {
      if (i % 2) {
        errno = 0;
        mpk_free(v, live[i].p);
        EXPECT_NE(errno, EINVAL) << "a valid free of block " << i << " set EINVAL";
      } else {
        kept.push_back(live[i]);
      }
    }
  });
  EXPECT_EQ(report, "") << "valid frees printed a report";
  live = kept;
  alloc_some(1000);  // reuses the freed space
  ASSERT_EQ(mpk_begin(v, RW), 0);
  for (size_t i = kept.size(); i < live.size(); ++i) Fill(live[i]);
  size_t damaged = 0;
  for (const Block &b : live) damaged += !Intact(b);
  EXPECT_EQ(damaged, 0u) << "blocks whose contents changed";
  std::vector<Block> sorted = live;
  std::sort(sorted.begin(), sorted.end(), [](const Block &a, const Block &b) { return a.p < b.p; });
  for (size_t i = 1; i < sorted.size(); ++i)
    EXPECT_FALSE(Overlap(sorted[i - 1], sorted[i])) << "blocks overlap at " << (void *)sorted[i].p;
  ASSERT_EQ(mpk_end(v), 0);
  for (const Block &b : live) mpk_free(v, b.p);
}

TEST_F(Malloc, InvalidAndDoubleFreesAreRefusedAndReported) {
  Group g(1);
  Group other(1);
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(other.ok());
  const int v = g.vkey();
  auto *a = static_cast<uint8_t *>(mpk_malloc(v, 64));
  auto *b = static_cast<uint8_t *>(mpk_malloc(v, 64));
  auto *c = static_cast<uint8_t *>(mpk_malloc(v, 256));
  auto *o = static_cast<uint8_t *>(mpk_malloc(other.vkey(), 64));
  ASSERT_TRUE(a && b && c && o);
  ASSERT_EQ(mpk_begin(v, RW), 0);
  memset(a, 0xaa, 64);
  memset(c, 0xcc, 256);
  ASSERT_EQ(mpk_end(v), 0);
  mpk_free(v, b);  // valid
  char on_stack[32];
  struct Bad {
    const char *what;
    int vkey;
    void *p;
  };
  const Bad bad[] = {
      {"double free", v, b},
      {"interior pointer", v, c + 16},
      {"pointer to the stack", v, on_stack},
      {"pointer to an mpk_mmap page of the group", v, g.base()},
      {"block of another group", v, o},
  };
  for (const Bad &x : bad) {
    SCOPED_TRACE(x.what);
    int e = 0;
    std::string report = mpkt::CaptureStderr([&] {
      errno = 0;
      mpk_free(x.vkey, x.p);
      e = errno;
    });
    EXPECT_EQ(e, EINVAL);
    EXPECT_NE(report, "") << "nothing reported on stderr";
  }
  // The heap is intact: live blocks keep their contents, new blocks don't overlap them.
  ASSERT_EQ(mpk_begin(v, RW), 0);
  EXPECT_TRUE(std::all_of(a, a + 64, [](uint8_t x) { return x == 0xaa; }));
  EXPECT_TRUE(std::all_of(c, c + 256, [](uint8_t x) { return x == 0xcc; }));
  std::vector<Block> fresh;
  for (int i = 0; i < 50; ++i) {
    auto *p = static_cast<uint8_t *>(mpk_malloc(v, 64));
    ASSERT_NE(p, nullptr);
    fresh.push_back({p, 64, static_cast<uint8_t>(i)});
    Fill(fresh.back());
    EXPECT_FALSE(Overlap(fresh.back(), {a, 64, 0}));
    EXPECT_FALSE(Overlap(fresh.back(), {c, 256, 0}));
  }
  for (const Block &f : fresh) EXPECT_TRUE(Intact(f));
  EXPECT_TRUE(std::all_of(a, a + 64, [](uint8_t x) { return x == 0xaa; }));
  EXPECT_TRUE(std::all_of(c, c + 256, [](uint8_t x) { return x == 0xcc; }));
  ASSERT_EQ(mpk_end(v), 0);
  // The other group's block was not freed by the refused cross-group free.
  ASSERT_EQ(mpk_begin(other.vkey(), RW), 0);
  EXPECT_TRUE(HasExactly(o, RW, PkruCheck::kExact));
  ASSERT_EQ(mpk_end(other.vkey()), 0);
  std::string report = mpkt::CaptureStderr([&] {
    mpk_free(other.vkey(), o);  // still valid
    mpk_free(v, a);
    mpk_free(v, c);
    for (const Block &f : fresh) mpk_free(v, f.p);
    errno = 0;
    mpk_free(v, nullptr);
    EXPECT_EQ(errno, 0) << "mpk_free(v, NULL) must do nothing";
  });
  EXPECT_EQ(report, "") << "valid frees printed a report";
}

TEST_F(Malloc, ThreadsAllocateAndFreeConcurrently) {
  constexpr int kThreads = 4, kOps = 400;
  Group g(1);
  ASSERT_TRUE(g.ok());
  const int v = g.vkey();
  std::vector<std::thread> ts;
  std::atomic<int> damaged{0}, failed{0};
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      if (mpk_begin(v, RW) != 0) {
        failed++;
        return;
      }
      uint32_t seed = 1000 + t;
      std::vector<Block> mine;
      for (int i = 0; i < kOps; ++i) {
        if (!mine.empty() && Lcg(&seed) % 3 == 0) {
          size_t j = Lcg(&seed) % mine.size();
          if (!Intact(mine[j])) damaged++;
          mpk_free(v, mine[j].p);
          mine.erase(mine.begin() + static_cast<long>(j));
        } else {
          size_t n = 1 + Lcg(&seed) % 300;
          auto *p = static_cast<uint8_t *>(mpk_malloc(v, n));
          if (p == nullptr || reinterpret_cast<uintptr_t>(p) % 16) {
            failed++;
            continue;
          }
          mine.push_back({p, n, static_cast<uint8_t>(t * 50 + i)});
          Fill(mine.back());
        }
      }
      for (const Block &b : mine) {
        if (!Intact(b)) damaged++;
        mpk_free(v, b.p);
      }
      mpk_end(v);
    });
  }
  for (auto &t : ts) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(damaged.load(), 0) << "blocks changed under their owner: the heap handed out "
                                  "overlapping memory";
}

#include "heap.h"

#include <sys/mman.h>

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <vector>

#include "meta_arena.h"

namespace mpk {
namespace {

// A page source over plain anonymous memory, counting what it hands out.
struct Source {
  size_t mapped = 0;
  static void *map(void *ctx, size_t bytes) {
    size_t over = bytes + Heap::kSpanSize;
    void *raw = mmap(nullptr, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    auto a = reinterpret_cast<uintptr_t>(raw);
    uintptr_t al = (a + Heap::kSpanSize - 1) & ~(Heap::kSpanSize - 1);
    static_cast<Source *>(ctx)->mapped += bytes;
    return reinterpret_cast<void *>(al);
  }
  static void unmap(void *ctx, void *, size_t bytes) { static_cast<Source *>(ctx)->mapped -= bytes; }
};

class HeapTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(arena.init(0)); }
  MetaArena arena;
  Source src;
  Heap heap{&arena, PageSource{Source::map, Source::unmap, &src}};
};

TEST(HeapClasses, CoverEverySmallSize) {
  for (size_t s = 1; s <= Heap::kMaxSmall; ++s) {
    int c = Heap::size_class(s);
    ASSERT_GE(c, 0) << s;
    ASSERT_GE(Heap::class_size(c), s) << s;
    ASSERT_EQ(Heap::class_size(c) % 16, 0u) << s;
    if (c > 0) ASSERT_LT(Heap::class_size(c - 1), s) << s;
  }
  EXPECT_EQ(Heap::size_class(Heap::kMaxSmall + 1), -1);
}

TEST_F(HeapTest, AllocationsAreAlignedDistinctAndUsable) {
  std::vector<std::pair<char *, size_t>> blocks;
  unsigned seed = 7;
  for (int i = 0; i < 20000; ++i) {
    seed = seed * 1103515245 + 12345;
    size_t size = (seed >> 8) % 3000 + 1;
    if (i % 500 == 0) size = 100000 + (seed % 300000);
    auto *p = static_cast<char *>(heap.alloc(size));
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u);
    std::memset(p, i & 0xff, size);
    blocks.emplace_back(p, size);
  }
  // No two blocks overlap, and every byte still holds what its owner wrote.
  std::map<uintptr_t, size_t> by_addr;
  for (auto &[p, s] : blocks) by_addr[reinterpret_cast<uintptr_t>(p)] = s;
  ASSERT_EQ(by_addr.size(), blocks.size());
  uintptr_t prev_end = 0;
  for (auto &[a, s] : by_addr) {
    ASSERT_GE(a, prev_end);
    prev_end = a + s;
  }
  for (size_t i = 0; i < blocks.size(); ++i)
    for (size_t j = 0; j < blocks[i].second; j += 97) ASSERT_EQ(uint8_t(blocks[i].first[j]), uint8_t(i & 0xff));
  EXPECT_EQ(heap.live_blocks(), blocks.size());
  for (auto &[p, s] : blocks) ASSERT_EQ(heap.free(p), Heap::FreeResult::kOk);
  EXPECT_EQ(heap.live_blocks(), 0u);
}

TEST_F(HeapTest, FreedBlocksAreReused) {
  void *a = heap.alloc(64);
  ASSERT_EQ(heap.free(a), Heap::FreeResult::kOk);
  EXPECT_EQ(heap.alloc(64), a);
  size_t mapped = src.mapped;
  for (int i = 0; i < 10000; ++i) {
    void *p = heap.alloc(200);
    ASSERT_EQ(heap.free(p), Heap::FreeResult::kOk);
  }
  EXPECT_EQ(src.mapped, mapped);
}

TEST_F(HeapTest, BadFreesAreRefusedAndHarmless) {
  auto *a = static_cast<char *>(heap.alloc(48));
  auto *b = static_cast<char *>(heap.alloc(48));
  auto *big = static_cast<char *>(heap.alloc(200000));
  int local;
  EXPECT_EQ(heap.free(&local), Heap::FreeResult::kNotOurs);
  EXPECT_EQ(heap.free(a + 8), Heap::FreeResult::kNotABlock);
  EXPECT_EQ(heap.free(big + 70000), Heap::FreeResult::kNotABlock);
  EXPECT_EQ(heap.free(a), Heap::FreeResult::kOk);
  EXPECT_EQ(heap.free(a), Heap::FreeResult::kDoubleFree);
  EXPECT_EQ(heap.free(big), Heap::FreeResult::kOk);
  EXPECT_EQ(heap.free(big), Heap::FreeResult::kNotOurs);  // its span is gone
  // The heap still works and b is untouched by all of that.
  std::memset(b, 0x5a, 48);
  auto *c = static_cast<char *>(heap.alloc(48));
  EXPECT_EQ(c, a);
  EXPECT_NE(c, b);
  EXPECT_EQ(heap.live_blocks(), 2u);
  EXPECT_EQ(b[47], 0x5a);
}

TEST_F(HeapTest, LargeAllocationsReturnTheirPages) {
  void *p = heap.alloc(1 << 20);
  ASSERT_NE(p, nullptr);
  size_t mapped = src.mapped;
  ASSERT_EQ(heap.free(p), Heap::FreeResult::kOk);
  EXPECT_EQ(src.mapped, mapped - (size_t{1} << 20));
}

TEST_F(HeapTest, AlignedAllocationsHonourTheirAlignment) {
  std::vector<void *> blocks;
  for (size_t align = 16; align <= Heap::kSpanSize; align *= 2) {
    for (size_t size : {size_t{1}, size_t{24}, align - 1, align, align + 1, size_t{20000}}) {
      void *p = heap.alloc_aligned(size, align);
      ASSERT_NE(p, nullptr) << size << " aligned " << align;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << size << " aligned " << align;
      EXPECT_GE(heap.usable(p), size);
      std::memset(p, 0x33, size);
      blocks.push_back(p);
    }
  }
  EXPECT_EQ(heap.alloc_aligned(16, Heap::kSpanSize * 2), nullptr);  // beyond a span: refused
  for (void *p : blocks) ASSERT_EQ(heap.free(p), Heap::FreeResult::kOk);
  EXPECT_EQ(heap.live_blocks(), 0u);
}

TEST_F(HeapTest, UsableSizeIsTheBlocksAndZeroForAnythingElse) {
  auto *small = static_cast<char *>(heap.alloc(100));
  auto *large = static_cast<char *>(heap.alloc(100000));
  ASSERT_NE(small, nullptr);
  ASSERT_NE(large, nullptr);
  EXPECT_EQ(heap.usable(small), Heap::class_size(Heap::size_class(100)));
  EXPECT_EQ(heap.usable(large), size_t{128} << 10);  // two 64 KiB spans
  EXPECT_EQ(heap.usable(small + 8), 0u);             // inside a block
  EXPECT_EQ(heap.usable(large + 4096), 0u);
  int local;
  EXPECT_EQ(heap.usable(&local), 0u);  // not this heap's
  ASSERT_EQ(heap.free(small), Heap::FreeResult::kOk);
  EXPECT_EQ(heap.usable(small), 0u);  // freed
}

TEST(MetaArena, AllocReturnsZeroedReusableBlocks) {
  MetaArena a;
  ASSERT_TRUE(a.init(0));
  auto *p = static_cast<char *>(a.alloc(100));
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(a.contains(p));
  std::memset(p, 0xff, 100);
  a.free(p, 100);
  auto *q = static_cast<char *>(a.alloc(120));  // same 128-byte class
  EXPECT_EQ(q, p);
  for (int i = 0; i < 128; ++i) ASSERT_EQ(q[i], 0);
  void *page = a.alloc(5000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(page) % 4096, 0u);
  EXPECT_EQ(a.alloc(size_t{1} << 31), nullptr);
}

}  // namespace
}  // namespace mpk

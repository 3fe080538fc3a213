#include "group_table.h"

#include <gtest/gtest.h>

#include <map>

#include "meta_arena.h"
#include "page_group.h"

namespace mpk {
namespace {

class GroupTableTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(arena.init(0)); }
  MetaArena arena;
};

TEST_F(GroupTableTest, TenThousandVkeysRoundTrip) {
  GroupTable t(&arena);
  static PageGroup groups[10000];
  for (int i = 0; i < 10000; ++i) {
    groups[i].vkey = i * 7919;
    ASSERT_TRUE(t.insert(i * 7919, &groups[i]));
  }
  EXPECT_EQ(t.size(), 10000u);
  for (int i = 0; i < 10000; ++i) ASSERT_EQ(t.find(i * 7919), &groups[i]) << i;
  EXPECT_EQ(t.find(1), nullptr);
  EXPECT_EQ(t.find(-5), nullptr);
  int n = 0;
  t.for_each([&](PageGroup *) { ++n; });
  EXPECT_EQ(n, 10000);
}

TEST_F(GroupTableTest, EraseAndReinsertMatchesAReferenceMap) {
  GroupTable t(&arena);
  std::map<int, PageGroup *> ref;
  static PageGroup pool[512];
  unsigned seed = 12345;
  for (int step = 0; step < 200000; ++step) {
    seed = seed * 1103515245 + 12345;
    int k = (seed >> 8) % 512;
    if (ref.count(k)) {
      ASSERT_TRUE(t.erase(k));
      ref.erase(k);
    } else {
      ASSERT_TRUE(t.insert(k, &pool[k]));
      ref[k] = &pool[k];
    }
    if (step % 997 == 0) {
      for (int q = 0; q < 512; ++q) ASSERT_EQ(t.find(q), ref.count(q) ? ref[q] : nullptr) << step;
    }
  }
  EXPECT_EQ(t.size(), ref.size());
  EXPECT_FALSE(t.erase(100000));
}

TEST_F(GroupTableTest, RangesMergeSplitAndOverlap) {
  PageGroup g;
  ASSERT_TRUE(g.add_range(arena, 0x10000, 0x4000));
  ASSERT_TRUE(g.add_range(arena, 0x14000, 0x2000));  // adjacent: merged
  EXPECT_EQ(g.nranges, 1u);
  EXPECT_EQ(g.bytes(), 0x6000u);
  ASSERT_TRUE(g.add_range(arena, 0x40000, 0x1000));
  EXPECT_EQ(g.nranges, 2u);
  ASSERT_TRUE(g.remove_span(arena, 0x11000, 0x1000));  // a hole in the middle
  EXPECT_EQ(g.nranges, 3u);
  EXPECT_EQ(g.bytes(), 0x6000u);
  EXPECT_TRUE(g.contains(0x10fff));
  EXPECT_FALSE(g.contains(0x11000));
  EXPECT_TRUE(g.contains(0x12000));
  EXPECT_TRUE(g.overlaps(0x3f000, 0x2000));
  ASSERT_TRUE(g.remove_span(arena, 0, 0x100000));
  EXPECT_EQ(g.nranges, 0u);
}

TEST_F(GroupTableTest, PageProtKeepsDataCeilingAndExactExec) {
  PageGroup g;
  g.ceiling = PROT_READ | PROT_WRITE | PROT_EXEC;
  g.prot = PROT_NONE;
  EXPECT_EQ(g.page_prot(), PROT_READ | PROT_WRITE);
  g.prot = PROT_READ | PROT_EXEC;
  EXPECT_EQ(g.page_prot(), PROT_READ | PROT_WRITE | PROT_EXEC);
  EXPECT_EQ(rights_of(PROT_WRITE), Rights::kReadWrite);
  EXPECT_EQ(rights_of(PROT_READ | PROT_EXEC), Rights::kRead);
  EXPECT_EQ(rights_of(PROT_EXEC), Rights::kNone);
  EXPECT_TRUE(within_ceiling(PROT_READ, PROT_READ | PROT_WRITE));
  EXPECT_FALSE(within_ceiling(PROT_WRITE, PROT_READ));
  EXPECT_FALSE(within_ceiling(PROT_EXEC, PROT_READ | PROT_WRITE));
}

TEST(Pkru, BitsFollowTheArchitecture) {
  EXPECT_EQ(pkru_bits(1, Rights::kNone), 0x4u);
  EXPECT_EQ(pkru_bits(1, Rights::kRead), 0x8u);
  EXPECT_EQ(pkru_bits(1, Rights::kReadWrite), 0u);
  uint32_t v = 0x55555554;
  v = pkru_with(v, 15, Rights::kReadWrite);
  EXPECT_EQ(v, 0x15555554u);
  EXPECT_EQ(pkru_rights(v, 15), Rights::kReadWrite);
  EXPECT_EQ(pkru_rights(v, 14), Rights::kNone);
  EXPECT_EQ(pkru_rights(pkru_with(v, 3, Rights::kRead), 3), Rights::kRead);
}

}  // namespace
}  // namespace mpk

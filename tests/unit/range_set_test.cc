// The parts of a thread-toggled group whose page table is at the ceiling (range_set.h).
#include "range_set.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace mpk {
namespace {

constexpr uintptr_t kP = 4096;

std::vector<std::pair<uintptr_t, uintptr_t>> gaps(const RangeSet &s, uintptr_t lo, uintptr_t hi) {
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  s.for_each_gap(lo, hi, [&](uintptr_t a, uintptr_t b) { out.emplace_back(a, b); });
  return out;
}

TEST(RangeSet, CommittedChunksCoalesce) {
  auto s = std::make_unique<RangeSet>();
  s->add(0 * kP, 16 * kP);
  s->add(32 * kP, 48 * kP);
  s->add(16 * kP, 32 * kP);  // the chunk between: one range
  EXPECT_EQ(s->n, 1);
  EXPECT_TRUE(s->covers(3 * kP, 40 * kP));
  EXPECT_FALSE(s->covers(40 * kP, 49 * kP));
}

TEST(RangeSet, RemovingTheMiddleSplits) {
  auto s = std::make_unique<RangeSet>();
  s->add(0, 10 * kP);
  s->remove(4 * kP, 6 * kP);
  EXPECT_EQ(s->n, 2);
  EXPECT_TRUE(s->covers(0, 4 * kP));
  EXPECT_FALSE(s->covers(3 * kP, 5 * kP));
  EXPECT_TRUE(s->covers(6 * kP, 10 * kP));
  auto g = gaps(*s, 0, 12 * kP);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[0], std::make_pair(4 * kP, 6 * kP));
  EXPECT_EQ(g[1], std::make_pair(10 * kP, 12 * kP));
}

TEST(RangeSet, AFullSetOnlyEverHoldsLess) {
  auto s = std::make_unique<RangeSet>();
  for (int i = 0; i < RangeSet::kMax; ++i) s->add(2 * i * kP, (2 * i + 1) * kP);  // kMax apart
  EXPECT_EQ(s->n, RangeSet::kMax);
  s->add(1000 * kP, 1001 * kP);  // no room: not recorded
  EXPECT_FALSE(s->covers(1000 * kP, 1001 * kP));
  s->add(0, 2 * kP);  // merges with its neighbours: fits
  EXPECT_TRUE(s->covers(0, 3 * kP));
  // A split with no room drops the whole range instead.
  for (int i = 0; s->n < RangeSet::kMax; ++i) s->add((2000 + 2 * i) * kP, (2001 + 2 * i) * kP);
  s->remove(kP, 2 * kP);
  EXPECT_FALSE(s->covers(0, kP));
  EXPECT_FALSE(s->covers(2 * kP, 3 * kP));
}

}  // namespace
}  // namespace mpk

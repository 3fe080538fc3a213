// The legacy emulation's memory of which ranges the program toggles.
#include "toggle_tracker.h"

#include <gtest/gtest.h>

#include <memory>

namespace mpk {
namespace {

TEST(ToggleTracker, CountsExactlyTheSameRange) {
  auto t = std::make_unique<ToggleTracker>();
  bool fresh = false;
  ToggleEntry &a = t->touch(0x10000, 0x4000, &fresh);
  EXPECT_TRUE(fresh);
  a.count = 1;
  EXPECT_EQ(t->touch(0x10000, 0x4000, &fresh).count, 1u);
  EXPECT_FALSE(fresh);
  t->touch(0x10000, 0x3000, &fresh);  // another length is another range
  EXPECT_TRUE(fresh);
}

TEST(ToggleTracker, ForgetDropsOverlappingRangesOnly) {
  auto t = std::make_unique<ToggleTracker>();
  bool fresh;
  t->touch(0x10000, 0x4000, &fresh).count = 3;
  t->touch(0x20000, 0x1000, &fresh).count = 5;
  t->forget(0x13000, 0x1000);
  EXPECT_TRUE((t->touch(0x10000, 0x4000, &fresh), fresh));
  EXPECT_EQ(t->touch(0x20000, 0x1000, &fresh).count, 5u);
  EXPECT_FALSE(fresh);
}

TEST(ToggleTracker, FullWindowReplacesTheLeastRecentlyUsed) {
  auto t = std::make_unique<ToggleTracker>();
  bool fresh;
  // Far more ranges than slots: the table never grows and recent ranges stay.
  for (uintptr_t i = 0; i < 3 * ToggleTracker::kSlots; ++i) t->touch(0x100000 + i * 0x10000, 0x1000, &fresh).count = 1;
  uintptr_t last = 0x100000 + (3 * ToggleTracker::kSlots - 1) * 0x10000;
  EXPECT_EQ(t->touch(last, 0x1000, &fresh).count, 1u);
  EXPECT_FALSE(fresh);
}

}  // namespace
}  // namespace mpk

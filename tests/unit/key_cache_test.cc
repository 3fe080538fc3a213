#include "key_cache.h"

#include <gtest/gtest.h>

namespace mpk {
namespace {

PageGroup *fake(int i) { return reinterpret_cast<PageGroup *>(uintptr_t(0x1000 * (i + 1))); }

TEST(KeyCache, OnlyAvailableKeysAreHandedOut) {
  KeyCache c;
  EXPECT_EQ(c.find_free(), 0);
  EXPECT_EQ(c.pick_victim(), 0);
  c.make_available(3);
  c.make_available(7);
  EXPECT_EQ(c.available_count(), 2);
  EXPECT_EQ(c.find_free(), 3);
  c.assign(3, fake(0), 1);
  EXPECT_EQ(c.find_free(), 7);
  c.assign(7, fake(1), 2);
  EXPECT_EQ(c.find_free(), 0);
  EXPECT_EQ(c.resident_count(), 2);
}

TEST(KeyCache, EvictsLeastRecentlyUsedUnpinned) {
  KeyCache c;
  for (int k = 1; k <= 4; ++k) {
    c.make_available(k);
    c.assign(k, fake(k), 10 * k);
  }
  EXPECT_EQ(c.pick_victim(), 1);
  c.touch(1, 100);
  EXPECT_EQ(c.pick_victim(), 2);
  c.pin(2);
  EXPECT_EQ(c.pick_victim(), 3);
  c.pin(3);
  c.pin(4);
  c.pin(1);
  EXPECT_EQ(c.pick_victim(), 0);
  EXPECT_TRUE(c.all_pinned());
  c.unpin(3);
  EXPECT_EQ(c.pick_victim(), 3);
  EXPECT_FALSE(c.all_pinned());
}

TEST(KeyCache, PinsCountOpenDomains) {
  KeyCache c;
  c.make_available(5);
  c.assign(5, fake(0), 1);
  c.pin(5);
  c.pin(5);
  c.unpin(5);
  EXPECT_EQ(c.pins(5), 1u);
  EXPECT_EQ(c.pick_victim(), 0);
  c.unpin(5);
  c.unpin(5);  // never below zero
  EXPECT_EQ(c.pins(5), 0u);
  EXPECT_EQ(c.pick_victim(), 5);
}

TEST(KeyCache, ReleaseFreesTheSlotAndDropsPins) {
  KeyCache c;
  c.make_available(2);
  c.assign(2, fake(0), 1);
  c.pin(2);
  c.release(2);
  EXPECT_EQ(c.owner(2), nullptr);
  EXPECT_EQ(c.pins(2), 0u);
  EXPECT_EQ(c.find_free(), 2);
  EXPECT_TRUE(c.available(2));
}

}  // namespace
}  // namespace mpk

// eviction_test.cc - more groups than hardware keys: eviction never changes what a thread may do.
#include <sys/syscall.h>
#include <unistd.h>

#include <map>
#include <set>

#include "pkey_test_util.h"

using namespace mpkt;

namespace {
constexpr int kRotation[3] = {PROT_NONE, PROT_READ, RW};

uint8_t Pattern(int group, int page) { return static_cast<uint8_t>(group * 31 + page * 7 + 1); }

struct Groups {
  std::vector<std::unique_ptr<Group>> g;
  std::vector<int> prot;
};

// Checks every group's right (both pages) in the calling thread, one smaps read for all keys.
void CheckAll(const Groups &gs, const char *who, bool check_contents) {
  std::vector<const void *> addrs;
  for (auto &g : gs.g) {
    addrs.push_back(g->page(0));
    addrs.push_back(g->page(1));
  }
  std::vector<int> keys = mpkt::pkeys_of(addrs);
  for (size_t i = 0; i < gs.g.size(); ++i) {
    for (int pg = 0; pg < 2; ++pg) {
      uint8_t *p = gs.g[i]->page(pg) + 64;
      EXPECT_TRUE(HasExactly(p, gs.prot[i], PkruCheck::kAtMost, keys[2 * i + pg]))
          << who << ": group " << i << " page " << pg;
      if (check_contents && (gs.prot[i] & PROT_READ)) {
        EXPECT_EQ(mpkt::probe_read(gs.g[i]->page(pg)), Pattern(static_cast<int>(i), pg))
            << who << ": contents of group " << i << " page " << pg;
      }
    }
  }
}

std::set<int> GroupKeys(const Groups &gs) {
  std::vector<const void *> addrs;
  for (auto &g : gs.g) addrs.push_back(g->base());
  std::set<int> keys;
  for (int k : mpkt::pkeys_of(addrs))
    if (k > 0) keys.insert(k);
  return keys;
}
}  // namespace

class Eviction : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { MPK_HW_SETUP(GetParam()); }
};

// 100 groups, each with its own permission (rotating NONE/READ/RW), each keeps exactly its
// permission in every thread, however the key cache shuffles them.
TEST_P(Eviction, HundredGroupsKeepTheirExactPermissions) {
  constexpr int kGroups = 100;
  Worker before(Worker::Wait::kSpin);
  Groups gs;
  for (int i = 0; i < kGroups; ++i) {
    gs.g.push_back(std::make_unique<Group>(2));
    ASSERT_TRUE(gs.g.back()->ok());
    gs.prot.push_back(kRotation[i % 3]);
  }
  // Fill each group while open, then give it its permission; the caller's PKRU must match at
  // once for a sample.
  for (int i = 0; i < kGroups; ++i) {
    ASSERT_EQ(mpk_mprotect(gs.g[i]->vkey(), RW), 0) << "group " << i << ": " << strerror(errno);
    gs.g[i]->page(0)[0] = Pattern(i, 0);
    gs.g[i]->page(1)[0] = Pattern(i, 1);
    ASSERT_EQ(mpk_mprotect(gs.g[i]->vkey(), gs.prot[i]), 0) << "group " << i;
    if (i % 10 == 0)
      EXPECT_TRUE(HasExactly(gs.g[i]->page(1) + 8, gs.prot[i], PkruCheck::kExact))
          << "group " << i << " right after its mpk_mprotect";
  }
  CheckAll(gs, "main", true);
  before.Run([&] { CheckAll(gs, "thread created before the groups", true); });
  {
    Worker after(Worker::Wait::kSleep);
    after.Run([&] { CheckAll(gs, "thread created after the groups", true); });
  }
  std::set<int> keys = GroupKeys(gs);
  EXPECT_LE(keys.size(), 13u) << "groups hold more keys than the library may use";
  if (GetParam() == 100) EXPECT_GE(keys.size(), 1u) << "evict_rate 100 but no group is resident";

  // Rotate every permission by one step (grants and revocations mixed) and check again.
  for (int i = kGroups - 1; i >= 0; --i) {
    gs.prot[i] = kRotation[(i + 1) % 3];
    ASSERT_EQ(mpk_mprotect(gs.g[i]->vkey(), gs.prot[i]), 0) << "group " << i;
  }
  CheckAll(gs, "main after rotation", true);
  before.Run([&] { CheckAll(gs, "other thread after rotation", true); });

  // Domains force groups into keys (evicting others); nobody else's rights move.
  std::vector<int> opened = {3, 50, 97};
  for (int i : opened) {
    ASSERT_EQ(mpk_begin(gs.g[i]->vkey(), RW), 0) << "group " << i << ": " << strerror(errno);
    EXPECT_TRUE(HasExactly(gs.g[i]->page(0) + 16, RW, PkruCheck::kExact)) << "domain on " << i;
  }
  before.Run([&] { CheckAll(gs, "other thread while main has domains", true); });
  for (int i : opened) ASSERT_EQ(mpk_end(gs.g[i]->vkey()), 0);
  CheckAll(gs, "main after closing its domains", true);

  // Other pkey users still get a key.
  errno = 0;
  int k = pkey_alloc(0, 0);
  EXPECT_GE(k, 1) << "pkey_alloc after 100 groups: " << strerror(errno);
  if (k >= 1) pkey_free(k);

  for (auto &g : gs.g) {
    uint8_t *p = g->base();
    ASSERT_EQ(mpk_munmap(g->vkey()), 0);
    g->Forget();
    EXPECT_FALSE(mpkt::is_mapped(p));
  }
}

// A thread that used a resident group keeps exactly its right after the group is evicted, and
// gets nothing on the group that now owns the key.
TEST_P(Eviction, EvictionMovesNoRightToTheNextOwnerOfTheKey) {
  Worker t(Worker::Wait::kSpin);
  Group victim(1);
  ASSERT_TRUE(victim.ok());
  ASSERT_EQ(mpk_mprotect(victim.vkey(), RW), 0);
  int k = mpkt::pkey_of(victim.base());
  t.Run([&] { EXPECT_TRUE(HasExactly(victim.base(), RW)); });
  if (k <= 0) GTEST_SKIP() << "the group never got a hardware key at this evict_rate";
  // Load many closed groups through domains until one takes key k.
  std::vector<std::unique_ptr<Group>> others;
  Group *taker = nullptr;
  for (int i = 0; i < 40 && taker == nullptr; ++i) {
    others.push_back(std::make_unique<Group>(1));
    ASSERT_TRUE(others.back()->ok());
    Group *o = others.back().get();
    ASSERT_EQ(mpk_begin(o->vkey(), RW), 0) << strerror(errno);
    if (mpkt::pkey_of(o->base()) == k) taker = o;
    ASSERT_EQ(mpk_end(o->vkey()), 0);
  }
  ASSERT_NE(taker, nullptr) << "no group took key " << k << " after 40 loads: eviction never "
                               "reused it";
  EXPECT_NE(mpkt::pkey_of(victim.base()), k);
  t.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(taker->base(), PROT_NONE)) << "the new owner of key " << k;
    EXPECT_TRUE(HasExactly(taker->base(), PROT_NONE)) << "the new owner of key " << k;
    EXPECT_TRUE(SyscallsHaveExactly(victim.base(), RW)) << "the evicted group";
    EXPECT_TRUE(HasExactly(victim.base(), RW)) << "the evicted group";
  });
  EXPECT_TRUE(HasExactly(taker->base(), PROT_NONE));
  EXPECT_TRUE(HasExactly(victim.base(), RW));
}

// An open domain pins its group: it keeps its key through a storm of loads.
TEST_P(Eviction, OpenDomainPinsItsKey) {
  Group pinned(1);
  ASSERT_TRUE(pinned.ok());
  ASSERT_EQ(mpk_begin(pinned.vkey(), RW), 0);
  int k = mpkt::pkey_of(pinned.base());
  ASSERT_GT(k, 0) << "a group with an open domain must own a key";
  std::vector<std::unique_ptr<Group>> others;
  for (int i = 0; i < 40; ++i) {
    others.push_back(std::make_unique<Group>(1));
    ASSERT_TRUE(others.back()->ok());
    ASSERT_EQ(mpk_mprotect(others.back()->vkey(), kRotation[i % 3]), 0);
    ASSERT_EQ(mpk_begin(others.back()->vkey(), PROT_READ), 0) << strerror(errno);
    ASSERT_EQ(mpk_end(others.back()->vkey()), 0);
  }
  EXPECT_EQ(mpkt::pkey_of(pinned.base()), k) << "the pinned group lost its key";
  EXPECT_TRUE(HasExactly(pinned.base(), RW, PkruCheck::kExact, k));
  Worker w;
  w.Run([&] {
    EXPECT_TRUE(HasExactly(pinned.base(), PROT_NONE));
    for (int i = 0; i < 40; ++i)
      EXPECT_TRUE(HasExactly(others[i]->base(), kRotation[i % 3])) << "group " << i;
  });
  ASSERT_EQ(mpk_end(pinned.vkey()), 0);
  EXPECT_TRUE(HasExactly(pinned.base(), PROT_NONE));
}

INSTANTIATE_TEST_SUITE_P(EvictRate, Eviction, ::testing::Values(100, 0),
                         [](const ::testing::TestParamInfo<int> &info) {
                           return "EvictRate" + std::to_string(info.param);
                         });

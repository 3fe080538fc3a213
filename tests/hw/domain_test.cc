// domain_test.cc - mpk_begin/mpk_end: thread-local rights, their independence from the
// process-wide right, EBUSY when every hardware key is pinned.
#include <sys/syscall.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "pkey_test_util.h"

using namespace mpkt;


class Domain : public mpkt::MpkHwTest {};

TEST_F(Domain, BeginGivesOnlyTheCallingThreadExactlyTheRight) {
  Worker other(Worker::Wait::kSpin);
  Group g(2);
  ASSERT_TRUE(g.ok());
  void *p = g.page(1);
  for (int prot : {RW, PROT_READ, PROT_NONE, RW}) {  // a second begin changes the right
    SCOPED_TRACE("mpk_begin " + mpkt::prot_name(prot));
    ASSERT_EQ(mpk_begin(g.vkey(), prot), 0) << strerror(errno);
    EXPECT_TRUE(HasExactly(p, prot, PkruCheck::kExact)) << "in the thread with the domain";
    EXPECT_NE(mpkt::pkey_of(p), 0) << "a group with an open domain must own a hardware key";
    other.Run([&] {
      EXPECT_TRUE(SyscallsHaveExactly(p, PROT_NONE)) << "another thread (the group is closed)";
      EXPECT_TRUE(HasExactly(p, PROT_NONE)) << "another thread (the group is closed)";
    });
  }
  ASSERT_EQ(mpk_end(g.vkey()), 0);
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact)) << "after mpk_end";
  other.Run([&] { EXPECT_TRUE(HasExactly(p, PROT_NONE)); });
}

TEST_F(Domain, OtherThreadsKeepTheProcessWideRight) {
  Worker other(Worker::Wait::kSleep);
  Group g(1);
  ASSERT_TRUE(g.ok());
  void *p = g.base();
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
  ASSERT_EQ(mpk_begin(g.vkey(), RW), 0);
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  other.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(p, PROT_READ));
    EXPECT_TRUE(HasExactly(p, PROT_READ));
  });
  ASSERT_EQ(mpk_begin(g.vkey(), PROT_NONE), 0);
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact));
  other.Run([&] { EXPECT_TRUE(HasExactly(p, PROT_READ)); });
  ASSERT_EQ(mpk_end(g.vkey()), 0);
  EXPECT_TRUE(HasExactly(p, PROT_READ, PkruCheck::kExact)) << "back to the process-wide right";
}

TEST_F(Domain, EndReturnsToAProcessWideRightChangedMeanwhile) {
  Group g(1);
  ASSERT_TRUE(g.ok());
  void *p = g.base();
  ASSERT_EQ(mpk_begin(g.vkey(), PROT_NONE), 0);
  ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact))
      << "mpk_mprotect must not touch the caller's own open domain";
  ASSERT_EQ(mpk_end(g.vkey()), 0);
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  ASSERT_EQ(mpk_begin(g.vkey(), RW), 0);
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  ASSERT_EQ(mpk_end(g.vkey()), 0);
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact));
}

TEST_F(Domain, MprotectLeavesOtherThreadsDomainsAlone) {
  Worker t(Worker::Wait::kSpin);
  Group g(1);
  ASSERT_TRUE(g.ok());
  void *p = g.base();
  t.Run([&] { ASSERT_EQ(mpk_begin(g.vkey(), PROT_NONE), 0); });
  ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  t.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(p, PROT_NONE)) << "a grant leaked into an open NONE domain";
    EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact));
    ASSERT_EQ(mpk_end(g.vkey()), 0);
    EXPECT_TRUE(SyscallsHaveExactly(p, RW)) << "after mpk_end";
    EXPECT_TRUE(HasExactly(p, RW)) << "after mpk_end";
    ASSERT_EQ(mpk_begin(g.vkey(), RW), 0);
    EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  });
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);  // a revocation: T keeps its domain
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact));
  t.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(p, RW)) << "a revocation took an open RW domain";
    EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
    ASSERT_EQ(mpk_end(g.vkey()), 0);
    EXPECT_TRUE(SyscallsHaveExactly(p, PROT_NONE));
    EXPECT_TRUE(HasExactly(p, PROT_NONE));
  });
}

// clone() copies the creator's PKRU: a thread created inside a domain must not inherit it.
TEST_F(Domain, NewThreadDoesNotInheritItsCreatorsDomain) {
  Group g(1);
  ASSERT_TRUE(g.ok());
  void *p = g.base();
  ASSERT_EQ(mpk_begin(g.vkey(), RW), 0);
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  std::thread([&] {
    EXPECT_TRUE(SyscallsHaveExactly(p, PROT_NONE)) << "new thread, syscalls first";
    EXPECT_TRUE(HasExactly(p, PROT_NONE));
  }).join();
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
  std::thread([&] {
    EXPECT_TRUE(SyscallsHaveExactly(p, PROT_READ));
    EXPECT_TRUE(HasExactly(p, PROT_READ));
  }).join();
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact)) << "the creator keeps its domain";
  ASSERT_EQ(mpk_end(g.vkey()), 0);
  EXPECT_TRUE(HasExactly(p, PROT_READ, PkruCheck::kExact));
}

TEST_F(Domain, ManyDomainsInManyThreadsAreIndependent) {
  constexpr int kThreads = 4;
  Group g(1);
  ASSERT_TRUE(g.ok());
  uint8_t *p = g.base();
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
  const int rights[kThreads] = {RW, PROT_NONE, PROT_READ, RW};
  std::atomic<int> ready{0}, go{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i) {
    ts.emplace_back([&, i] {
      if (i < 3) {
        ASSERT_EQ(mpk_begin(g.vkey(), rights[i]), 0);
      }
      ready.fetch_add(1);
      ASSERT_TRUE(mpkt::WaitFor([&] { return go.load() == 1; }));
      int expect = i < 3 ? rights[i] : PROT_READ;  // thread 3 has no domain
      EXPECT_TRUE(HasExactly(p + i, expect)) << "thread " << i;
      if (i < 3) {
        EXPECT_EQ(mpk_end(g.vkey()), 0);
      }
      EXPECT_TRUE(HasExactly(p + i, PROT_READ)) << "thread " << i << " after mpk_end";
    });
  }
  ASSERT_TRUE(mpkt::WaitFor([&] { return ready.load() == kThreads; }));
  EXPECT_TRUE(HasExactly(p, PROT_READ, PkruCheck::kExact));
  go.store(1);
  for (auto &t : ts) t.join();
}

// Every hardware key the library may use pinned by open domains: the next mpk_begin is EBUSY,
// other groups still get their exact permission (through the page table), and other pkey users
// still get a key.
TEST_F(Domain, BeginIsEbusyWhenEveryKeyIsPinned) {
  constexpr int kGroups = 20;
  std::vector<std::unique_ptr<Group>> groups;
  for (int i = 0; i < kGroups; ++i) {
    groups.push_back(std::make_unique<Group>(1));
    ASSERT_TRUE(groups.back()->ok());
  }
  int pinned = 0;
  int busy_errno = 0;
  for (; pinned < kGroups; ++pinned) {
    errno = 0;
    if (mpk_begin(groups[pinned]->vkey(), RW) != 0) {
      busy_errno = errno;
      break;
    }
  }
  ASSERT_LT(pinned, kGroups) << "mpk_begin never failed with " << kGroups
                             << " domains open: there are at most 15 hardware keys";
  EXPECT_EQ(busy_errno, EBUSY) << strerror(busy_errno);
  EXPECT_GE(pinned, 1);
  EXPECT_LE(pinned, 13) << "one key is for the library's metadata and at least one is left for "
                           "other pkey users";
  // The pinned groups each own a distinct key and give this thread exactly RW.
  std::set<int> keys;
  for (int i = 0; i < pinned; ++i) {
    int k = mpkt::pkey_of(groups[i]->base());
    EXPECT_GT(k, 0) << "group " << i << " has an open domain but no hardware key";
    keys.insert(k);
    EXPECT_TRUE(HasExactly(groups[i]->base(), RW, PkruCheck::kExact, k)) << "group " << i;
  }
  EXPECT_EQ(keys.size(), static_cast<size_t>(pinned)) << "two pinned groups share a key";
  // The refused group is unchanged: still closed for this thread.
  EXPECT_TRUE(HasExactly(groups[pinned]->base(), PROT_NONE)) << "the group refused with EBUSY";
  // Other threads see only the process-wide rights (closed).
  {
    Worker w;
    w.Run([&] {
      for (int i = 0; i <= pinned; ++i) EXPECT_TRUE(HasExactly(groups[i]->base(), PROT_NONE));
    });
  }
  // mpk_mprotect still works on a group that cannot get a key.
  Group extra(1);
  ASSERT_TRUE(extra.ok());
  ASSERT_EQ(mpk_mprotect(extra.vkey(), PROT_READ), 0) << strerror(errno);
  EXPECT_TRUE(HasExactly(extra.base(), PROT_READ));
  ASSERT_EQ(mpk_mprotect(extra.vkey(), RW), 0) << strerror(errno);
  EXPECT_TRUE(HasExactly(extra.base(), RW));
  ASSERT_EQ(mpk_mprotect(extra.vkey(), PROT_NONE), 0) << strerror(errno);
  EXPECT_TRUE(HasExactly(extra.base(), PROT_NONE));
  // Another pkey user in the process still gets a key.
  errno = 0;
  int k = pkey_alloc(0, 0);
  EXPECT_GE(k, 1) << "pkey_alloc with every libmpk key pinned: " << strerror(errno);
  if (k >= 1) pkey_free(k);
  // Closing one domain frees a key for the refused group.
  ASSERT_EQ(mpk_end(groups[0]->vkey()), 0);
  ASSERT_EQ(mpk_begin(groups[pinned]->vkey(), RW), 0) << strerror(errno);
  EXPECT_TRUE(HasExactly(groups[pinned]->base(), RW, PkruCheck::kExact));
  EXPECT_TRUE(HasExactly(groups[0]->base(), PROT_NONE)) << "after its domain was closed";
  for (int i = 1; i <= pinned; ++i) EXPECT_EQ(mpk_end(groups[i]->vkey()), 0);
}

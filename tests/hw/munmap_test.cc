// munmap_test.cc - mpk_munmap unmaps every page, closes every domain, frees the key and forgets
// the vkey; no protection-key-use-after-free.
#include <sys/syscall.h>
#include <unistd.h>

#include "pkey_test_util.h"

using namespace mpkt;

namespace {

// Opens RW domains on fresh groups until one owns hardware key k or mpk_begin reports EBUSY
// (every key pinned). Returns the group with key k with its domain still open in the calling
// thread; every other domain is closed again. nullptr if no group got key k.
Group *TakeKey(int k, std::vector<std::unique_ptr<Group>> *keep) {
  std::vector<Group *> opened;
  Group *taker = nullptr;
  for (int i = 0; i < 20 && taker == nullptr; ++i) {
    keep->push_back(std::make_unique<Group>(1));
    Group *g = keep->back().get();
    if (!g->ok()) break;
    if (mpk_begin(g->vkey(), RW) != 0) {
      EXPECT_EQ(errno, EBUSY) << strerror(errno);
      break;
    }
    if (mpkt::pkey_of(g->base()) == k)
      taker = g;
    else
      opened.push_back(g);
  }
  for (Group *g : opened) EXPECT_EQ(mpk_end(g->vkey()), 0);
  return taker;
}
}  // namespace

class Munmap : public mpkt::MpkHwTest {};

TEST_F(Munmap, UnmapsEveryPageAndForgetsTheVkey) {
  const int v = mpkt::FreshVkey();
  void *a = mpk_mmap(v, nullptr, 3 * mpkt::kPage, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(a, MAP_FAILED);
  void *b = mpk_mmap(v, nullptr, mpkt::kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(b, MAP_FAILED);
  void *m1 = mpk_malloc(v, 100);
  void *m2 = mpk_malloc(v, 64 * 1024);
  ASSERT_NE(m1, nullptr);
  ASSERT_NE(m2, nullptr);
  ASSERT_EQ(mpk_mprotect(v, RW), 0);
  memset(m1, 1, 100);
  ASSERT_EQ(mpk_munmap(v), 0) << strerror(errno);
  for (void *p : {a, static_cast<void *>(static_cast<char *>(a) + 2 * mpkt::kPage), b, m1, m2})
    EXPECT_FALSE(mpkt::is_mapped(p)) << p << " is still mapped after mpk_munmap";
  ExpectUnknownVkey(v);
  std::string report = mpkt::CaptureStderr([&] {
    errno = 0;
    mpk_free(v, m1);
  });
  EXPECT_EQ(errno, EINVAL) << "mpk_free on a forgotten vkey; stderr: " << report;
  // The vkey can name a new group, which starts closed like any new group.
  void *c = mpk_mmap(v, nullptr, mpkt::kPage, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(c, MAP_FAILED);
  EXPECT_TRUE(HasExactly(c, PROT_NONE, PkruCheck::kExact)) << "a reused vkey is a new, closed group";
  ASSERT_EQ(mpk_mprotect(v, RW), 0);
  EXPECT_TRUE(HasExactly(c, RW, PkruCheck::kExact));
  ASSERT_EQ(mpk_munmap(v), 0);
}

TEST_F(Munmap, ClosesEveryThreadsDomain) {
  Worker t(Worker::Wait::kSpin);
  Group g(1);
  ASSERT_TRUE(g.ok());
  t.Run([&] {
    ASSERT_EQ(mpk_begin(g.vkey(), RW), 0);
    EXPECT_TRUE(HasExactly(g.base(), RW, PkruCheck::kExact));
  });
  ASSERT_EQ(mpk_begin(g.vkey(), PROT_READ), 0);
  ASSERT_EQ(mpk_munmap(g.vkey()), 0) << strerror(errno);
  g.Forget();
  errno = 0;
  EXPECT_EQ(mpk_end(g.vkey()), -1) << "main's domain should be gone";
  EXPECT_EQ(errno, EINVAL);
  t.Run([&] {
    errno = 0;
    EXPECT_EQ(mpk_end(g.vkey()), -1) << "the other thread's domain should be gone";
    EXPECT_EQ(errno, EINVAL);
  });
}

// A thread with a right to a group (a domain, or the process-wide right it used) must have no
// access to the next group that gets the same hardware key after mpk_munmap.
TEST_F(Munmap, NoProtectionKeyUseAfterFree) {
  struct Case {
    const char *name;
    bool domain;
    Worker::Wait wait;
  };
  const Case cases[] = {
      {"domain, running thread", true, Worker::Wait::kSpin},
      {"domain, sleeping thread", true, Worker::Wait::kSleep},
      {"process-wide right, running thread", false, Worker::Wait::kSpin},
      {"process-wide right, sleeping thread", false, Worker::Wait::kSleep},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    Worker t(c.wait);
    Group old(1);
    ASSERT_TRUE(old.ok());
    if (c.domain) {
      t.Run([&] {
        ASSERT_EQ(mpk_begin(old.vkey(), RW), 0);
        EXPECT_TRUE(HasExactly(old.base(), RW, PkruCheck::kExact));
      });
    } else {
      ASSERT_EQ(mpk_mprotect(old.vkey(), RW), 0);
      ASSERT_EQ(mpk_begin(old.vkey(), RW), 0);  // make sure it is resident, then back to P
      ASSERT_EQ(mpk_end(old.vkey()), 0);
      t.Run([&] { EXPECT_TRUE(HasExactly(old.base(), RW)); });
    }
    const int k = mpkt::pkey_of(old.base());
    ASSERT_GT(k, 0) << "the group never got a hardware key";
    ASSERT_EQ(mpk_munmap(old.vkey()), 0);
    old.Forget();

    std::vector<std::unique_ptr<Group>> keep;
    Group *reuse = TakeKey(k, &keep);
    ASSERT_NE(reuse, nullptr) << "key " << k << " of the munmapped group was never reused, even "
                                 "with every other key pinned: mpk_munmap did not free it";
    // Main has RW on the new group (its domain); the old right holder must have nothing.
    EXPECT_TRUE(HasExactly(reuse->base(), RW, PkruCheck::kExact, k));
    t.Run([&] {
      EXPECT_TRUE(SyscallsHaveExactly(reuse->base(), PROT_NONE))
          << "stale right to key " << k << " reached the new group (syscalls)";
      EXPECT_TRUE(HasExactly(reuse->base(), PROT_NONE, PkruCheck::kAtMost, k))
          << "stale right to key " << k << " reached the new group";
    });
    // Process-wide: grant and revoke the new group; the old holder follows exactly.
    ASSERT_EQ(mpk_mprotect(reuse->vkey(), PROT_READ), 0);
    t.Run([&] { EXPECT_TRUE(HasExactly(reuse->base(), PROT_READ)); });
    ASSERT_EQ(mpk_mprotect(reuse->vkey(), PROT_NONE), 0);
    t.Run([&] { EXPECT_TRUE(HasExactly(reuse->base(), PROT_NONE)); });
    ASSERT_EQ(mpk_end(reuse->vkey()), 0);
  }
}

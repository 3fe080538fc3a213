// lock_bias_test.cc - a key's lock biased to the thread that keeps toggling it (KeyLock::
// acquire_fast): that thread then takes it with plain stores, and any other thread that needs
// the key takes the bias back first (membarrier). The bias must appear, be taken back, and never
// let two threads change a key's state at once: every thread's register agrees with each
// mpk_mprotect that returned before it looked, and domains opened meanwhile stay exact.
#include <atomic>
#include <sstream>
#include <thread>

#include "sim_test_util.h"

using namespace simt;

namespace {

class SimLockBias : public SimTest {};

// One thread toggles until its lock is biased; another then toggles the same group: its call
// takes the bias back and both threads see exactly what was set.
TEST_F(SimLockBias, TheBiasIsTakenBackByTheNextThread) {
  Group g(1, RW);
  ASSERT_TRUE(g.ok());
  const int key = key_of(g.vkey());
  ASSERT_GT(key, 0);
  const uint64_t biases0 = stat("lock_biases"), revoked0 = stat("bias_revocations");
  std::thread owner([&] {
    for (int i = 0; i < 1000; ++i) {
      ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
      ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
    }
    EXPECT_EQ(own_rights(key), mpk::Rights::kRead);
  });
  owner.join();
  EXPECT_GT(stat("lock_biases"), biases0) << "1,000 uncontended toggles by one thread must bias the lock";
  // The owner is gone; its record's bias is still on the key, and this call must take it back.
  ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
  EXPECT_EQ(own_rights(key), mpk::Rights::kReadWrite);
  EXPECT_GT(stat("bias_revocations"), revoked0);
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
  EXPECT_EQ(own_rights(key), mpk::Rights::kNone);
}

// Two threads toggle one group in turns of 150 calls, so the bias keeps moving; a third
// keeps checking its own register against what was published, and opens and closes a domain on
// a second group whose key stays pinned throughout.
TEST_F(SimLockBias, TheBiasMovesBetweenThreadsAndRightsStayExact) {
  constexpr int kTurns = kUnderTsan ? 6 : 10, kPerTurn = 150;  // biased after 64 calls of a turn
  GroupPair p;
  ASSERT_TRUE(p.ready());
  auto &[g, d, key, dkey, right] = p;
  std::atomic<int> turn{0};
  std::atomic<bool> done{false};
  std::atomic<uint64_t> stale{0}, checks{0}, bad_calls{0}, bad_domains{0};
  std::string first_stale;
  std::atomic<bool> have_first{false};
  const uint64_t revoked0 = stat("bias_revocations"), fallbacks0 = fallbacks();

  auto toggler = [&](int me) {
    for (int t = me; t < kTurns; t += 2) {
      while (turn.load() != t) spin_pause();
      for (int i = 0; i < kPerTurn; ++i) {
        const int prot = i % 2 ? PROT_READ : RW;
        right.changing();
        const uint64_t f0 = fallbacks();
        if (mpk_mprotect(g.vkey(), prot) != 0) bad_calls.fetch_add(1);
        if (fallbacks() != f0) {  // the group left its key (revocation_test.cc): publish the new one
          if (mpk_mprotect(g.vkey(), PROT_NONE) != 0) bad_calls.fetch_add(1);
          key = key_of(g.vkey());
          if (mpk_mprotect(g.vkey(), prot) != 0) bad_calls.fetch_add(1);
          if (!key) continue;
        }
        right.settled(prot, key);
        if (own_rights(key) != rights_of(prot)) bad_calls.fetch_add(1);
      }
      turn.store(t + 1);
    }
  };
  std::thread a(toggler, 0), b(toggler, 1);
  std::thread checker([&] {
    while (!done.load()) {
      PublishedRight::Result r = right.check();
      if (r.check == PublishedRight::Check::kStale) {
        stale.fetch_add(1);
        if (!have_first.exchange(true)) {
          std::ostringstream m;
          m << name(r.got) << " on key " << r.key << ", expected " << name(r.want);
          first_stale = m.str();
        }
      } else if (r.check == PublishedRight::Check::kOk) {
        checks.fetch_add(1);
      }
      before_call();
      const uint64_t f0 = fallbacks();
      bool ok = mpk_begin(d.vkey(), RW) == 0 && own_rights(dkey) == mpk::Rights::kReadWrite;
      ok = mpk_end(d.vkey()) == 0 && ok;
      if (!ok && fallbacks() == f0) bad_domains.fetch_add(1);
      spin_pause();
    }
  });
  a.join();
  b.join();
  done.store(true);
  checker.join();

  EXPECT_EQ(bad_calls.load(), 0u);
  EXPECT_EQ(stale.load(), 0u) << first_stale;
  EXPECT_GT(checks.load(), 0u);
  EXPECT_EQ(bad_domains.load(), 0u);
  // A sync that fell back (under ThreadSanitizer only) moves the group to the page table, where
  // no fast path runs and no lock is biased.
  if (fallbacks() == fallbacks0) {
    EXPECT_GT(stat("bias_revocations"), revoked0) << "each turn's first call must take the other thread's bias back";
  }
}

}  // namespace

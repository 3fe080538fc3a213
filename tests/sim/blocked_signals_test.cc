// blocked_signals_test.cc - a thread that holds a right and then blocks every signal
// (pthread_sigmask) cannot take the sync signal: revocations must still return, by falling back
// to the page table (the group's pages get the new permission with mprotect, which holds for
// every thread), and say so in the statistics. Once the thread unblocks, syncs reach it again.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "sim_test_util.h"

using namespace simt;

namespace {

class SimBlockedSignals : public SimTest {};

TEST_F(SimBlockedSignals, RevocationFallsBackAndReturns) {
  constexpr int kRounds = 5;
  Group g(2, RW);
  ASSERT_TRUE(g.ok());
  const int v = g.vkey();
  std::atomic<int> key{key_of(v)};
  ASSERT_GT(key.load(), 0);

  PublishedRight right;
  right.settled(PROT_NONE, key.load());
  // 1 running, 2 holds RW and blocked every signal, 3 may unblock, 4 unblocked, 5 may check
  std::atomic<int> stage{0};
  std::atomic<int> blocked_result{-1};
  PublishedRight::Result final_check{};
  std::thread blocker([&] {
    stage.store(1);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (own_rights(key.load()) != mpk::Rights::kReadWrite && std::chrono::steady_clock::now() < deadline)
      spin_pause();
    sigset_t all, old;
    sigfillset(&all);
    if (own_rights(key.load()) != mpk::Rights::kReadWrite) {  // the grant never came
      blocked_result.store(-2);
      stage.store(2);
      return;
    }
    blocked_result.store(pthread_sigmask(SIG_BLOCK, &all, &old));
    stage.store(2);
    while (stage.load() != 3) spin_pause();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);  // the pending sync signal is taken here
    stage.store(4);
    while (stage.load() != 5) spin_pause();
    do final_check = right.check();
    while (final_check.check == PublishedRight::Check::kDiscarded);
  });
  while (stage.load() < 1) spin_pause();

  // The grant reaches the running thread (under ThreadSanitizer a sync may fall back: again).
  for (int attempt = 0;; ++attempt) {
    uint64_t f0 = fallbacks();
    ASSERT_EQ(mpk_mprotect(v, RW), 0);
    if (fallbacks() == f0) break;
    ASSERT_TRUE(kUnderTsan && attempt < 5) << "the grant to a running thread fell back";
    ASSERT_EQ(mpk_mprotect(v, PROT_NONE), 0);
    key.store(key_of(v));
  }
  while (stage.load() < 2) spin_pause();
  if (blocked_result.load() != 0) {
    blocker.join();
    FAIL() << (blocked_result.load() == -2 ? "the grant never reached the thread" : "pthread_sigmask failed");
  }

  uint64_t fallbacks0 = fallbacks(), signals0 = stat("revocation_signals");
  for (int round = 0; round < kRounds; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(mpk_mprotect(v, PROT_NONE), 0) << "round " << round << ": " << strerror(errno);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(ms, 2000) << "round " << round << ": a revocation waited " << ms << " ms for a thread that blocks it";
    // The blocked thread could not be told: the page table holds the revocation for everyone.
    EXPECT_EQ(maps_perms(g.base()), "---p") << "round " << round;
    EXPECT_TRUE(own_rights(key.load()) == mpk::Rights::kNone) << "round " << round << ": the caller's own register";
    EXPECT_EQ(fallbacks() - fallbacks0, static_cast<uint64_t>(round + 1)) << "round " << round;
    // The grant loads the group again (the blocked thread's shadow already holds it: no signal).
    ASSERT_EQ(mpk_mprotect(v, RW), 0) << "round " << round << ": " << strerror(errno);
    EXPECT_EQ(maps_perms(g.base()).substr(0, 3), "rw-") << "round " << round;
  }
  EXPECT_GE(stat("revocation_signals") - signals0, 1u);

  // The thread unblocks: its pending sync signal is taken and acked, and syncs reach it again.
  stage.store(3);
  while (stage.load() != 4) spin_pause();
  bool clean = false;
  for (int attempt = 0; attempt < 5 && !clean; ++attempt) {
    right.changing();
    uint64_t f1 = fallbacks();
    ASSERT_EQ(mpk_mprotect(v, PROT_NONE), 0);
    ASSERT_EQ(mpk_mprotect(v, RW), 0);
    ASSERT_EQ(mpk_mprotect(v, PROT_NONE), 0);
    key.store(key_of(v));  // the group may have come back in another key
    clean = fallbacks() == f1 && key.load() > 0;
    if (!kUnderTsan) break;
  }
  EXPECT_TRUE(clean) << "a sync fell back although every thread takes the signal";
  // Resident again: the pages keep their ceiling and the register holds the revocation.
  EXPECT_EQ(maps_perms(g.base()).substr(0, 3), "rw-");
  right.settled(PROT_NONE, key.load());
  stage.store(5);
  blocker.join();
  EXPECT_EQ(final_check.check, PublishedRight::Check::kOk)
      << "the unblocked thread reads " << name(final_check.got) << " on key " << final_check.key << ", expected "
      << name(final_check.want);
}

}  // namespace

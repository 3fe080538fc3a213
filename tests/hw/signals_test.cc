// signals_test.cc - revocation and grants reach threads that block every signal. Such a thread
// must never fault in user mode (SIGSEGV is blocked: the kernel would kill the process), so its
// rights are checked with system calls, which return EFAULT where it has no access.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pkey_test_util.h"

using namespace mpkt;

namespace {

void BlockAllSignals() {
  sigset_t all;
  sigfillset(&all);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &all, nullptr), 0);
}
void UnblockAllSignals() {
  sigset_t all;
  sigfillset(&all);
  ASSERT_EQ(pthread_sigmask(SIG_UNBLOCK, &all, nullptr), 0);
}
bool SegvBlocked() {
  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, nullptr, &cur);
  return sigismember(&cur, SIGSEGV) == 1;
}

// The sequence of rights every test below walks through: grants and revocations.
const int kSequence[] = {RW, PROT_READ, PROT_NONE, PROT_READ, RW, PROT_NONE, RW, PROT_NONE};

void WalkRights(Worker &blocked, const Group &g) {
  mpkt::Watchdog wd(300, "mpk_mprotect with a thread that blocks all signals");
  void *p = g.base();
  int step = 0;
  for (int prot : kSequence) {
    SCOPED_TRACE("step " + std::to_string(step++) + ": mpk_mprotect " + mpkt::prot_name(prot));
    ASSERT_EQ(mpk_mprotect(g.vkey(), prot), 0) << strerror(errno);
    blocked.Run([&] {
      EXPECT_TRUE(SegvBlocked());
      EXPECT_TRUE(SyscallsHaveExactly(p, prot)) << "in the thread that blocks all signals";
    });
    EXPECT_TRUE(HasExactly(p, prot, PkruCheck::kExact)) << "in the calling thread";
  }
}
}  // namespace

class Signals : public mpkt::MpkHwTest {};

TEST_F(Signals, RunningThreadThatBlocksAllSignalsFollowsEveryChange) {
  Worker blocked(Worker::Wait::kSpin, /*block_all_signals=*/true);
  Group g(1);
  ASSERT_TRUE(g.ok());
  WalkRights(blocked, g);
}

TEST_F(Signals, SleepingThreadThatBlocksAllSignalsFollowsEveryChange) {
  Worker blocked(Worker::Wait::kSleep, /*block_all_signals=*/true);
  Group g(1);
  ASSERT_TRUE(g.ok());
  WalkRights(blocked, g);
}

// The sharp case: the thread holds the grant in its PKRU (it wrote in user mode), then blocks
// every signal, so the library cannot reach it with a signal when main revokes.
TEST_F(Signals, RevokeReachesThreadThatBlockedSignalsAfterUsingTheGrant) {
  mpkt::Watchdog wd(300, "RevokeReachesThreadThatBlockedSignalsAfterUsingTheGrant");
  Worker t(Worker::Wait::kSpin);
  Group g(1);
  ASSERT_TRUE(g.ok());
  void *p = g.base();
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
    t.Run([&] {
      EXPECT_TRUE(HasExactly(p, RW)) << "user-mode use of the grant";
      BlockAllSignals();
    });
    ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
    t.Run([&] { EXPECT_TRUE(SyscallsHaveExactly(p, PROT_READ)) << "RW -> READ, signals blocked"; });
    ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
    t.Run([&] { EXPECT_TRUE(SyscallsHaveExactly(p, PROT_NONE)) << "READ -> NONE, signals blocked"; });
    ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
    t.Run([&] { EXPECT_TRUE(SyscallsHaveExactly(p, RW)) << "NONE -> RW, signals blocked"; });
    ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
    t.Run([&] {
      EXPECT_TRUE(SyscallsHaveExactly(p, PROT_NONE)) << "RW -> NONE, signals blocked";
      UnblockAllSignals();
      // Signals open again: user mode too must have nothing left.
      EXPECT_TRUE(HasExactly(p, PROT_NONE)) << "after unblocking signals";
    });
  }
}

// A thread that blocks all signals inside an open domain keeps exactly its domain's right.
TEST_F(Signals, DomainOfThreadThatBlocksAllSignalsIsUntouched) {
  mpkt::Watchdog wd(300, "DomainOfThreadThatBlocksAllSignalsIsUntouched");
  Worker t(Worker::Wait::kSpin);
  Group g(1);
  ASSERT_TRUE(g.ok());
  void *p = g.base();
  t.Run([&] {
    ASSERT_EQ(mpk_begin(g.vkey(), PROT_READ), 0);
    EXPECT_TRUE(HasExactly(p, PROT_READ, PkruCheck::kExact));
    BlockAllSignals();
  });
  ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
  t.Run([&] { EXPECT_TRUE(SyscallsHaveExactly(p, PROT_READ)) << "domain READ, process-wide RW"; });
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
  t.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(p, PROT_READ)) << "domain READ, process-wide NONE";
    ASSERT_EQ(mpk_end(g.vkey()), 0);
    EXPECT_TRUE(SyscallsHaveExactly(p, PROT_NONE)) << "after mpk_end";
    UnblockAllSignals();
    EXPECT_TRUE(HasExactly(p, PROT_NONE));
  });
}

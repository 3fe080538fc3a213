// Signal corner cases of the sync: a revocation that lands inside a signal handler the shim did
// not wrap, a program handler that calls mprotect while its thread is inside the engine, and the
// masks a program hands to sigsuspend and friends.
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "pkey_test_util.h"
#include "shim_test_util.h"

using mpkt::RW;
using shimt::Mapping;

namespace {

class NestedSignals : public ::testing::Test {
 protected:
  void SetUp() override { mpkt::install_probe_handler(); }
};

using shimt::KernelSigaction;
constexpr unsigned long kSaRestorer = 0x04000000;
constexpr int kSigSetxid = 33;  // glibc's internal signal for setuid and friends

std::atomic<int> g_in_handler{0};
std::atomic<int> g_release{0};

// Stands for glibc's SIGSETXID handler: installed with a raw rt_sigaction (no wrapper sees it),
// running with signal 33 blocked. It stays until the test lets it go.
void glibc_like_handler(int, siginfo_t *, void *) {
  g_in_handler.store(1);
  while (!g_release.load()) {
  }
  g_in_handler.store(2);
}

// A revocation that reaches a thread while it runs a handler nobody wrapped must not be applied to
// that handler's frame alone (sigreturn would restore the old right): once the handler returns,
// the thread's own code has lost the right.
TEST_F(NestedSignals, RevocationInsideAnUnwrappedHandlerHoldsAfterItReturns) {
  SHIM_SKIP_UNLESS_EMULATING();
  Mapping m(1);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mpkt::pkey_of(m.base()) > 0, true) << "the range should be emulated";
  ASSERT_EQ(mprotect(m.base(), m.bytes(), RW), 0);

  // The restorer glibc gives every handler: read back from a handler installed through it.
  struct sigaction dummy = {};
  dummy.sa_handler = [](int) {};
  ASSERT_EQ(sigaction(SIGUSR2, &dummy, nullptr), 0);
  KernelSigaction k = {};
  ASSERT_EQ(syscall(SYS_rt_sigaction, SIGUSR2, nullptr, &k, 8), 0);
  ASSERT_TRUE(k.flags & kSaRestorer);
  KernelSigaction raw = {glibc_like_handler, SA_SIGINFO | kSaRestorer, k.restorer, uint64_t{1} << (kSigSetxid - 1)};
  ASSERT_EQ(syscall(SYS_rt_sigaction, SIGUSR2, &raw, nullptr, 8), 0);

  g_in_handler.store(0);
  g_release.store(0);
  std::atomic<int> wrote_before{0}, write_after{-1};
  std::atomic<bool> revoked{false};
  std::thread b([&] {
    m.base()[0] = 1;  // holds the write right now
    wrote_before.store(1);
    while (g_in_handler.load() != 2) {
    }
    // Back in its own code after the handler; once the revocation has returned it must hold here.
    while (!revoked.load()) {
    }
    write_after.store(mpkt::probe_write(m.base(), 1, nullptr) ? 1 : 0);
  });
  while (!wrote_before.load()) {
  }
  pthread_kill(b.native_handle(), SIGUSR2);
  while (g_in_handler.load() != 1) {
  }
  uint64_t signals = shimt::counter(&mpk::Stats::revocation_signals);
  // Lets the handler go a moment after the revocation started: its sync lands inside it.
  std::thread releaser([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    g_release.store(1);
  });
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  revoked.store(true);
  releaser.join();
  b.join();
  EXPECT_EQ(write_after.load(), 0) << "the thread kept the write right it had before the handler";
  EXPECT_GE(shimt::counter(&mpk::Stats::revocation_signals) - signals, 2u)
      << "the sync taken inside the handler should have been sent again";
  EXPECT_EQ(shimt::counter(&mpk::Stats::sync_fallbacks), 0u);
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGUSR2, &dfl, nullptr);
}

// sigsuspend with every signal in its mask: the thread still takes revocations while it waits.
TEST_F(NestedSignals, SigsuspendWithEverythingBlockedStillTakesTheSync) {
  SHIM_SKIP_UNLESS_EMULATING();
  Mapping m(1);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), RW), 0);
  std::atomic<int> stage{0};
  std::thread b([&] {
    m.base()[0] = 1;
    struct sigaction sa = {};
    sa.sa_handler = [](int) {};
    sigaction(SIGUSR1, &sa, nullptr);
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGUSR1);
    stage.store(1);
    sigsuspend(&all);  // until SIGUSR1
    stage.store(2);
  });
  while (stage.load() != 1) {
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // inside sigsuspend
  uint64_t fallbacks = shimt::counter(&mpk::Stats::sync_fallbacks);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  EXPECT_EQ(shimt::counter(&mpk::Stats::sync_fallbacks), fallbacks)
      << "a thread in sigsuspend with the sync signal in its mask stalled the revocation";
  EXPECT_EQ(stage.load(), 1) << "the sync signal must not end the program's sigsuspend";
  pthread_kill(b.native_handle(), SIGUSR1);
  b.join();
}

// A signal whose handler calls mprotect, delivered while its thread is inside the engine: the
// handler runs after the engine call returns, never inside it (where its mprotect could only wait
// for the lock its own thread holds, or go to the kernel behind the engine's back).
std::atomic<int> g_reentries{0}, g_bypassed{0};
uint8_t *g_page;
void mprotect_from_handler(int) {
  uint64_t calls = shimt::counter(mpk::Hot::legacy_calls);
  if (mprotect(g_page, 4096, PROT_READ | PROT_WRITE) == 0) g_reentries.fetch_add(1);
  if (shimt::counter(mpk::Hot::legacy_calls) == calls) g_bypassed.fetch_add(1);
}

TEST_F(NestedSignals, HandlerThatCallsMprotectNeverDeadlocks) {
  shimt::emulating();  // reads the statistics page now, not first in a handler
  Mapping m(2);
  g_page = m.base();
  shimt::Toggle(m, 3);
  struct sigaction sa = {}, old;
  sa.sa_handler = mprotect_from_handler;
  sa.sa_flags = SA_RESTART;
  ASSERT_EQ(sigaction(SIGALRM, &sa, &old), 0);
  // A timer firing every 20 microseconds while this thread cuts and rejoins the group (the slow
  // path: page-level exceptions, g_lock) and toggles it whole (the fast path).
  struct itimerval it = {{0, 20}, {0, 20}};
  ASSERT_EQ(setitimer(ITIMER_REAL, &it, nullptr), 0);
  int errors = 0;
  for (int i = 0; i < 4000; ++i) {
    errors += mprotect(m.base() + 4096, 4096, PROT_READ) != 0;
    errors += mprotect(m.base(), m.bytes(), i % 2 ? PROT_READ : RW) != 0;
  }
  struct itimerval off = {};
  setitimer(ITIMER_REAL, &off, nullptr);
  sigaction(SIGALRM, &old, nullptr);
  EXPECT_EQ(errors, 0);
  EXPECT_GT(g_reentries.load(), 0) << "the timer never fired";
  if (shimt::emulating()) EXPECT_EQ(g_bypassed.load(), 0) << "handler calls the engine did not serve";
}

}  // namespace

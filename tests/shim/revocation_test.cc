// A revocation through the shim is synchronous: once mprotect(PROT_READ) returns, no thread writes
// the range any more, even one that spins writing to it. 10,000 rounds against a writer thread.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "shim_test_util.h"

namespace {

std::atomic<uint64_t> g_epoch{0};     // bumped by the main thread when the writer may go on
std::atomic<uint64_t> g_fault_at{0};  // the epoch in which the writer last faulted (+1)

// The writer's SIGSEGV handler: it waits for the next grant, then the write is retried.
void wait_for_grant(int, siginfo_t *, void *) {
  uint64_t e = g_epoch.load();
  g_fault_at.store(e + 1);
  while (g_epoch.load() == e) {
  }
}

TEST(Revocation, TenThousandRoundsAgainstASpinningWriter) {
  // Without keys the shim passes mprotect through: fewer rounds check the test itself.
  const int kRounds = shimt::emulating() ? 10000 : 1000;
  shimt::Mapping m(1);
  shimt::Toggle(m, 3);
  if (shimt::emulating()) ASSERT_GT(mpkt::pkey_of(m.base()), 0) << "the range should be served by a key";
  struct sigaction sa = {}, old;
  sa.sa_sigaction = wait_for_grant;
  sa.sa_flags = SA_SIGINFO;
  ASSERT_EQ(sigaction(SIGSEGV, &sa, &old), 0);
  uint64_t signals = shimt::counter(&mpk::Stats::revocation_signals);
  uint64_t fallbacks = shimt::counter(&mpk::Stats::sync_fallbacks);

  auto *word = reinterpret_cast<volatile uint64_t *>(m.base());
  std::atomic<uint64_t> writes{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (uint64_t v = 1; !stop.load(std::memory_order_relaxed); ++v) {
      *word = v;
      writes.store(v, std::memory_order_release);
    }
  });
  int stale = 0, first_stale_round = -1;
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ | PROT_WRITE), 0);
    g_epoch.fetch_add(1);  // lets the writer out of its handler: it writes again
    uint64_t w = writes.load(std::memory_order_acquire);
    while (writes.load(std::memory_order_acquire) == w) {
    }
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
    uint64_t after_revoke = *word;
    // The writer keeps trying until it faults in this epoch; nothing may land meanwhile. A writer
    // that goes on writing is a failure, not a hang.
    while (g_fault_at.load() != g_epoch.load() + 1 && writes.load(std::memory_order_acquire) < after_revoke + 1000) {
    }
    if (*word != after_revoke && ++stale == 1) first_stale_round = round;
    if (stale > 10) break;
  }
  stop.store(true);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ | PROT_WRITE), 0);
  g_epoch.fetch_add(1);
  writer.join();
  sigaction(SIGSEGV, &old, nullptr);
  EXPECT_EQ(stale, 0) << "writes after the revocation returned; first in round " << first_stale_round;
  if (shimt::emulating()) {
    // The writer held the right each round took away: every revocation signalled it, none fell back.
    EXPECT_GE(shimt::counter(&mpk::Stats::revocation_signals) - signals, static_cast<uint64_t>(kRounds));
    EXPECT_EQ(shimt::counter(&mpk::Stats::sync_fallbacks), fallbacks);
  }
}

}  // namespace

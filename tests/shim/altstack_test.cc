// A program's small alternate signal stack (2 KiB, the old MINSIGSTKSZ) under the shim: lazy
// grants are SIGSEGVs handled on it, which must neither kill the thread nor write past its ends
// on a CPU whose signal frame is large (preload/interpose_altstack.cc).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "shim_test_util.h"

namespace {

TEST(AltStack, TwoKibStackSurvivesLazyGrants) {
  constexpr size_t kSmall = 2048, kGuard = 4096;
  constexpr int kRounds = 200;
  shimt::Mapping m(1);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  alignas(64) static uint8_t area[kGuard + kSmall + kGuard];
  std::memset(area, 0xa5, sizeof area);
  std::atomic<int> round{-1}, done{-1}, revoked{-1}, resumed{-1};
  bool view_ok = false, canaries_ok = false;
  std::thread b([&] {
    stack_t ss = {}, now = {};
    ss.ss_sp = area + kGuard;
    ss.ss_size = kSmall;
    if (sigaltstack(&ss, nullptr) != 0) return;
    // The program's own stack is what it is told it has.
    view_ok = sigaltstack(nullptr, &now) == 0 && now.ss_sp == ss.ss_sp && now.ss_size == kSmall && now.ss_flags == 0;
    for (int r = 0; r < kRounds; ++r) {
      while (round.load() != r) {
      }
      m.base()[r % 4096] = static_cast<uint8_t>(r);  // a lazy grant under the shim: SIGSEGV on the altstack
      done.store(r);
      // The revocation returns once this thread's sync handler has taken it; the handler may
      // still be running. This thread's code sees `revoked` only after the handler is done, so
      // the next round's grant cannot reach the handler (which would rightly apply it, and
      // spare the next write its fault).
      while (revoked.load() != r) {
      }
      resumed.store(r);
    }
    bool ok = true;
    for (size_t i = 0; i < kGuard; ++i) ok &= area[i] == 0xa5 && area[kGuard + kSmall + i] == 0xa5;
    canaries_ok = ok;
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, nullptr);
  });
  const uint64_t grants = shimt::counter(&mpk::Stats::lazy_grants);
  const uint64_t fallbacks = shimt::counter(&mpk::Stats::sync_fallbacks);
  for (int r = 0; r < kRounds; ++r) {
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ | PROT_WRITE), 0);
    round.store(r);
    while (done.load() != r) {
    }
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
    revoked.store(r);
    while (resumed.load() != r) {
    }
  }
  b.join();
  EXPECT_TRUE(view_ok) << "sigaltstack must report the program's own stack";
  EXPECT_TRUE(canaries_ok) << "a handler wrote past the ends of the program's 2 KiB stack";
  if (shimt::emulating()) {
    // Every round's write is a lazy grant, unless a revocation could not be synced in time (a
    // loaded machine): the page table then serves the group for a while, and writes that find
    // their page writable take no fault. Even then the handler must have run on the small stack.
    const uint64_t granted = shimt::counter(&mpk::Stats::lazy_grants) - grants;
    const uint64_t fell_back = shimt::counter(&mpk::Stats::sync_fallbacks) - fallbacks;
    EXPECT_GE(granted, fell_back ? uint64_t{1} : uint64_t{kRounds}) << "sync fallbacks meanwhile: " << fell_back;
  }
}

}  // namespace

// revocation_test.cc - 10,000 rounds of process-wide mpk_mprotect RW -> NONE by one thread while
// three others spin reading their own PKRU. After each call returns, every spinner must read
// exactly the new right: a check made after the revocation returned that still grants is stale.
#include <cerrno>
#include <sstream>
#include <thread>
#include <vector>

#include "sim_test_util.h"

using namespace simt;

namespace {

class SimRevocation : public SimTest {};

TEST_F(SimRevocation, TenThousandRoundsWhileThreadsSpin) {
  constexpr int kRounds = 10000, kSpinners = 3;
  Group g(1, RW);
  ASSERT_TRUE(g.ok());
  const int v = g.vkey();
  int key = key_of(v);
  ASSERT_GT(key, 0);

  PublishedRight right;
  right.settled(PROT_NONE, key);
  struct Spinner {
    std::atomic<uint64_t> checked{0};  // the last settled state this spinner checked
    uint64_t checks = 0, stale = 0;
    std::string first_stale;
  };
  std::vector<Spinner> spinners(kSpinners);
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kSpinners; ++i) {
    threads.emplace_back([&, i] {
      Spinner &s = spinners[i];
      started.fetch_add(1);
      while (!stop.load()) {
        PublishedRight::Result r = right.check();
        if (r.check != PublishedRight::Check::kDiscarded) {
          ++s.checks;
          if (r.check == PublishedRight::Check::kStale && s.stale++ == 0) {
            std::ostringstream m;
            m << "round " << PublishedRight::round_of(r.state) / 4 << ": read " << name(r.got) << " on key " << r.key
              << " after mpk_mprotect(" << name(r.want) << ") returned";
            s.first_stale = m.str();
          }
          s.checked.store(r.state);
        }
        spin_pause();
      }
    });
  }
  while (started.load() < kSpinners) spin_pause();

  uint64_t signals0 = stat("revocation_signals"), fallbacks0 = fallbacks(), rounds0 = stat("sync_rounds");
  // Each settled state is checked by every spinner before the next change begins, so every
  // round is 2 x 3 checks made after the call returned (and maybe more).
  auto wait_for_checks = [&] {
    uint64_t want = right.state();
    for (Spinner &s : spinners)
      while (s.checked.load() != want) spin_pause();
  };
  int bad_calls = 0, own_stale = 0, fell_back = 0;
  // One call, published: settled with the right it set, unless the sync fell back (the group
  // left its key): then the new key is looked up and the state settles on it, unchecked by this
  // round's spinners only if the lookup's own calls changed nothing else.
  auto publish_call = [&](int prot) {
    right.changing();
    uint64_t f0 = fallbacks();
    if (mpk_mprotect(v, prot) != 0) ++bad_calls;
    if (fallbacks() != f0) {
      ++fell_back;
      if (mpk_mprotect(v, PROT_NONE) != 0) ++bad_calls;
      key = key_of(v);
      if (prot != PROT_NONE && mpk_mprotect(v, prot) != 0) ++bad_calls;
      if (!key) return;  // left in changing: nothing more is checked
    }
    if (own_rights(key) != rights_of(prot)) ++own_stale;
    right.settled(prot, key);
    wait_for_checks();
  };
  for (int round = 0; round < kRounds && key; ++round) {
    publish_call(RW);
    publish_call(PROT_NONE);
  }
  stop.store(true);
  for (auto &t : threads) t.join();

  ASSERT_GT(key, 0) << "the group never came back into a key after a fallback";
  EXPECT_EQ(bad_calls, 0) << "mpk_mprotect calls that failed";
  EXPECT_EQ(own_stale, 0) << "calls after which the caller's own register was wrong";
  uint64_t checks = 0;
  for (int i = 0; i < kSpinners; ++i) {
    checks += spinners[i].checks;
    EXPECT_EQ(spinners[i].stale, 0u) << "spinner " << i << ": " << spinners[i].stale << " stale reads; first: "
                                     << spinners[i].first_stale;
  }
  EXPECT_GE(checks, uint64_t{2} * kRounds * kSpinners);
  // Every spinner held the right each call took away: each revocation signalled.
  EXPECT_GE(stat("revocation_signals") - signals0, uint64_t{kRounds});
  EXPECT_GE(stat("sync_rounds") - rounds0, uint64_t{2} * kRounds);
  RecordProperty("sync_fallbacks", fell_back);
  if (kUnderTsan) {
    EXPECT_LE(fell_back, kRounds / 100) << "calls whose sync fell back";
  } else {
    EXPECT_EQ(fallbacks(), fallbacks0) << "revocations that fell back to the page table";
  }
}

}  // namespace

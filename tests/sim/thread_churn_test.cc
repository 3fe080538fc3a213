// thread_churn_test.cc - threads are created and joined continuously while another thread keeps
// granting and revoking a group: syncs find threads that are starting, exiting (some with a
// domain still open) or already gone. Every call returns, every thread's register agrees with
// each mpk_mprotect that returned before it looked, every thread is registered, and the domains
// of threads that exited are unpinned.
#include <cerrno>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "sim_test_util.h"

using namespace simt;

namespace {

class SimThreadChurn : public SimTest {};

TEST_F(SimThreadChurn, ThreadsComeAndGoWhileRevocationsRun) {
  constexpr int kPairs = 300;  // the creator starts two threads, joins them, and again
  GroupPair p;
  ASSERT_TRUE(p.ready());
  auto &[g, d, key, dkey, right] = p;
  std::atomic<uint64_t> checks{0}, stale{0}, bad_domains{0}, created{0};
  std::atomic<bool> churn_done{false};
  std::string first_stale;
  std::atomic<bool> have_first{false};

  auto worker = [&](int n) {
    // From its first instruction the thread must hold what the state says (it was registered
    // and given its rights before its start routine ran).
    for (int i = 0; i < 20; ++i) {
      PublishedRight::Result r = right.check();
      if (r.check == PublishedRight::Check::kStale) {
        stale.fetch_add(1);
        if (!have_first.exchange(true)) {
          std::ostringstream m;
          m << "thread " << n << " check " << i << ": " << name(r.got) << " on key " << r.key << ", expected "
            << name(r.want);
          first_stale = m.str();
        }
      } else if (r.check == PublishedRight::Check::kOk) {
        checks.fetch_add(1);
      }
      spin_pause();
    }
    if (n % 2) {
      // A domain, closed or left open at exit: the exiting thread's pin must go with it.
      uint64_t f0 = fallbacks();
      before_call();
      bool ok = mpk_begin(d.vkey(), PROT_READ) == 0 && own_rights(dkey) == mpk::Rights::kRead;
      if (n % 4 == 1) ok = mpk_end(d.vkey()) == 0 && ok;
      if (!ok && fallbacks() == f0) bad_domains.fetch_add(1);  // else d may have left its key
    }
  };

  uint64_t registered0 = stat("threads_registered"), signals0 = stat("revocation_signals");
  uint64_t fallbacks0 = fallbacks();
  std::thread creator([&] {
    for (int i = 0; i < kPairs; ++i) {
      std::thread a(worker, 2 * i), b(worker, 2 * i + 1);
      created.fetch_add(2);
      a.join();
      b.join();
    }
    churn_done.store(true);
  });
  int rounds = 0, bad_calls = 0;
  // As in revocation_test.cc: a call whose sync fell back is not published; the group's new key is.
  auto publish_call = [&](int prot) {
    right.changing();
    uint64_t f0 = fallbacks();
    if (mpk_mprotect(g.vkey(), prot) != 0) ++bad_calls;
    if (fallbacks() != f0) {
      if (mpk_mprotect(g.vkey(), PROT_NONE) != 0) ++bad_calls;
      key = key_of(g.vkey());
      if (prot != PROT_NONE && mpk_mprotect(g.vkey(), prot) != 0) ++bad_calls;
      if (!key) return;
    }
    right.settled(prot, key);
    spin_pause();
  };
  while (!churn_done.load()) {
    publish_call(RW);
    publish_call(PROT_NONE);
    ++rounds;
  }
  creator.join();

  EXPECT_EQ(bad_calls, 0) << "of " << 2 * rounds << " mpk_mprotect calls";
  EXPECT_EQ(stale.load(), 0u) << first_stale;
  EXPECT_GT(checks.load(), 0u);
  EXPECT_EQ(bad_domains.load(), 0u) << "mpk_begin/mpk_end in the short-lived threads";
  // The creator and every thread it made went through the library's pthread_create.
  EXPECT_GE(stat("threads_registered") - registered0, created.load() + 1);
  EXPECT_GT(stat("revocation_signals"), signals0);
  uint64_t fell_back = fallbacks() - fallbacks0;
  RecordProperty("rounds", rounds);
  RecordProperty("sync_fallbacks", static_cast<int>(fell_back));
  // Under ThreadSanitizer a thread that takes the sync signal on its way out, then waits for the
  // engine's lock in its exit path (the revoker holds it), acks only after the deadline.
  if (!kUnderTsan) {
    EXPECT_EQ(fell_back, 0u) << "syncs that fell back to the page table";
  }

  // Every key can still be pinned: the domains left open by exited threads were dropped.
  std::vector<std::unique_ptr<Group>> more;
  std::vector<int> vkeys;
  for (int i = 0; i < mpk::kHwKeys; ++i) {  // more groups than keys
    more.push_back(std::make_unique<Group>(1, PROT_READ));
    vkeys.push_back(more.back()->vkey());
  }
  uint64_t f_pins = fallbacks();
  PinResult pins = pin_until_failure(vkeys);
  if (!kUnderTsan || fallbacks() == f_pins) {  // a load whose sync fell back is EBUSY too
    EXPECT_EQ(pins.pinned, static_cast<int>(stat("hw_keys")));
    EXPECT_EQ(pins.err, EBUSY);
  }
  end_first(vkeys, pins.pinned);
}

}  // namespace

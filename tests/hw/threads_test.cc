// threads_test.cc - threads created and exiting while the process-wide right keeps changing.
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "pkey_test_util.h"

using namespace mpkt;


class Threads : public mpkt::MpkHwTest {};

// Main toggles the group between NONE and READ|WRITE while other threads keep creating short-
// lived threads that check their rights and exit, some of them in the middle of a sync. The state
// is published with a sequence lock: a thread whose two reads of the sequence match (even) saw
// one stable right during its probes and must have had exactly that right.
TEST_F(Threads, ThreadsExitingDuringSyncs) {
  mpkt::Watchdog wd(300, "Threads.ThreadsExitingDuringSyncs");
  Group g(1);
  ASSERT_TRUE(g.ok());
  uint8_t *p = g.base();
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
  std::atomic<uint64_t> seq{0};   // odd while main is inside mpk_mprotect
  std::atomic<int> cur{PROT_NONE};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> created{0}, checked{0}, violations{0};
  std::atomic<int> first_bad_prot{-1}, first_bad_r{-1}, first_bad_w{-1}, first_bad_s{-1};
  std::atomic<uint32_t> first_bad_pkru{0};
  std::atomic<uint64_t> first_bad_seq{0}, missing_grants{0}, stale_rights{0};

  auto probe_thread = [&] {
    for (int i = 0; i < 3; ++i) {
      uint64_t s1 = seq.load(std::memory_order_acquire);
      if (s1 & 1) continue;
      int prot = cur.load(std::memory_order_acquire);
      bool r = mpkt::probe_read(p) >= 0;
      bool w = mpkt::probe_write(p + 1, 1);
      bool s = mpkt::sys_read_access(p + 2) == 0;
      if (seq.load(std::memory_order_acquire) != s1) continue;
      checked++;
      bool want = prot & PROT_READ;
      if (r != want || w != want || s != want) {
        uint32_t pkru = mpkt::rdpkru();
        (want ? missing_grants : stale_rights)++;
        if (violations.fetch_add(1) == 0) {
          first_bad_prot = prot;
          first_bad_r = r;
          first_bad_w = w;
          first_bad_s = s;
          first_bad_pkru = pkru;
          first_bad_seq = s1;
        }
      }
    }
  };
  auto spawner = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      std::thread batch[4];
      for (auto &t : batch) t = std::thread(probe_thread);
      created += 4;
      for (auto &t : batch) t.join();
    }
  };
  std::thread sp1(spawner), sp2(spawner);

  auto t0 = std::chrono::steady_clock::now();
  int toggles = 0;
  for (;;) {
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (toggles >= 400 && (created.load() >= 400 || secs > 60)) break;
    if (secs > 120) break;
    int prot = toggles % 2 ? PROT_NONE : RW;
    seq.fetch_add(1, std::memory_order_acq_rel);  // odd: changing
    if (mpk_mprotect(g.vkey(), prot) != 0) {
      ADD_FAILURE() << "mpk_mprotect: " << strerror(errno);
      break;
    }
    cur.store(prot, std::memory_order_release);
    seq.fetch_add(1, std::memory_order_acq_rel);  // even: stable
    ++toggles;
    // Hold each state a moment so that threads also see stable states, not only changes.
    auto hold = std::chrono::steady_clock::now() + std::chrono::microseconds(300);
    while (std::chrono::steady_clock::now() < hold) std::this_thread::yield();
  }
  stop = true;
  sp1.join();
  sp2.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("[ info     ] %d toggles, %llu threads, %llu stable checks in %.2f s\n", toggles,
         static_cast<unsigned long long>(created.load()),
         static_cast<unsigned long long>(checked.load()), secs);
  EXPECT_GE(toggles, 400);
  EXPECT_GE(created.load(), 100u);
  EXPECT_GT(checked.load(), 0u) << "no thread ever saw a stable state";
  char pkru_hex[16];
  snprintf(pkru_hex, sizeof pkru_hex, "%08x", first_bad_pkru.load());
  EXPECT_EQ(violations.load(), 0u)
      << "thread checks whose rights differed from a stable process-wide right ("
      << missing_grants.load() << " missing grants, " << stale_rights.load()
      << " stale rights after a revocation); first: expected "
      << mpkt::prot_name(first_bad_prot.load()) << " at sequence " << first_bad_seq.load()
      << ", user read " << first_bad_r.load() << ", user write " << first_bad_w.load()
      << ", syscall read " << first_bad_s.load() << ", PKRU 0x" << pkru_hex << ", group key "
      << mpkt::pkey_of(p);
  // Afterwards everything is still exact.
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
  EXPECT_TRUE(HasExactly(p, PROT_READ, PkruCheck::kExact));
  std::thread([&] { EXPECT_TRUE(HasExactly(p, PROT_READ)); }).join();
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
  std::thread([&] { EXPECT_TRUE(HasExactly(p, PROT_NONE)); }).join();
}

// Threads that exit while holding a domain or a grant leave nothing behind: their keys can be
// pinned again and the group's right is exact for everyone else.
TEST_F(Threads, ExitingWithOpenDomainsLeavesNoPinnedKeys) {
  constexpr int kRounds = 30;
  Group g(1);
  ASSERT_TRUE(g.ok());
  for (int i = 0; i < kRounds; ++i) {
    std::thread([&] {
      ASSERT_EQ(mpk_begin(g.vkey(), RW), 0);
      EXPECT_TRUE(HasExactly(g.base(), RW, PkruCheck::kExact));
      // exits with the domain open
    }).join();
  }
  EXPECT_TRUE(HasExactly(g.base(), PROT_NONE));
  // All keys can still be pinned: count how many domains open before EBUSY.
  std::vector<std::unique_ptr<Group>> gs;
  int pinned = 0;
  for (; pinned < 20; ++pinned) {
    gs.push_back(std::make_unique<Group>(1));
    ASSERT_TRUE(gs.back()->ok());
    if (mpk_begin(gs.back()->vkey(), RW) != 0) break;
  }
  EXPECT_EQ(errno, EBUSY);
  EXPECT_GE(pinned, 2) << "domains of exited threads still pin keys";
  for (int i = 0; i < pinned; ++i) EXPECT_EQ(mpk_end(gs[i]->vkey()), 0);
  // Compare with the count in a clean state: the exited threads' domain on g must not cost one.
  ASSERT_EQ(mpk_munmap(g.vkey()), 0);
  g.Forget();
  int pinned_again = 0;
  for (; pinned_again < static_cast<int>(gs.size()); ++pinned_again)
    if (mpk_begin(gs[pinned_again]->vkey(), RW) != 0) break;
  EXPECT_EQ(pinned_again, pinned) << "the number of keys available changed after mpk_munmap of "
                                     "the group the exited threads had open";
  for (int i = 0; i < pinned_again; ++i) EXPECT_EQ(mpk_end(gs[i]->vkey()), 0);
}

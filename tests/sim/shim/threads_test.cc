// threads_test.cc - the shim's emulated mprotect and its threads on simulated keys: an ordinary
// program under LD_PRELOAD=libmpk_shim.so with MPK_SIMULATE=1. Grants reach the calling thread at
// once and the others lazily (which a simulation never triggers: no fault); revocations must hold
// in every thread before mprotect returns. Each thread checks its own simulated register.
#include <gtest/gtest.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>
#include <vector>

#include "shim_sim_util.h"

using namespace shimsim;

namespace {

constexpr int RW = PROT_READ | PROT_WRITE;
constexpr size_t kPages = 2, kBytes = kPages * 4096;

class ShimSimThreads : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!simulating()) {
      if (getenv("MPK_SIMULATE")) FAIL() << "MPK_SIMULATE is set but the shim does not run on simulated keys";
      GTEST_SKIP() << "run under LD_PRELOAD=libmpk_shim.so with MPK_SIMULATE=1 (ctest does)";
    }
    std::string why;
    uint32_t v;
    ASSERT_TRUE(shim_pkru(&v, &why)) << why;
    alarm(300);
  }
  void TearDown() override { alarm(0); }

  // A mapping mprotected often enough to become an emulated group in a hardware key.
  uint8_t *HotMapping() {
    void *p = mmap(nullptr, kBytes, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    for (int i = 0; i < 3; ++i)
      if (mprotect(p, kBytes, PROT_READ) != 0 || mprotect(p, kBytes, RW) != 0) return nullptr;
    return static_cast<uint8_t *>(p);
  }
};

// A right published by the thread that changes it; others check against their own register,
// discarding reads that were not made between two identical settled states (sim_test_util.h).
// A revocation is exact for everyone; grants are lazy, so a thread may hold less: "at most".
struct Published {
  std::atomic<uint64_t> state{0};  // sequence << 8 | key << 2 | right, 3 while changing
  uint64_t next() const { return (state.load() & ~uint64_t{0xff}) + 0x100; }
  void changing() { state.store(next() | 3); }
  void settled(int prot, int key) { state.store(next() | static_cast<uint64_t>(key) << 2 | static_cast<uint64_t>(rights_of(prot))); }
  // -1 discarded, else 1 ok, 0 stale (holds more than the settled right)
  int check(uint64_t *seen, int *key, int *got) const {
    uint64_t s1 = state.load();
    *key = static_cast<int>((s1 >> 2) & 0x3f);
    *got = *key > 0 && *key < 16 ? own_rights(*key) : -1;
    uint64_t s2 = state.load();
    *seen = s1;
    if (s1 != s2 || (s1 & 3) == 3 || *got < 0) return -1;
    return *got <= static_cast<int>(s1 & 3) ? 1 : 0;
  }
};

// Each round one thread takes the write right for itself with mprotect (the caller's grant is
// immediate), then the main thread revokes in two steps; after each revocation returns every
// thread, the granted one included, must read no more than the new right.
TEST_F(ShimSimThreads, RevocationReachesTheThreadThatTookTheGrant) {
  constexpr int kThreads = 3, kRounds = 2000;
  uint8_t *m = HotMapping();
  ASSERT_NE(m, nullptr) << strerror(errno);
  ASSERT_GT(region_key(m), 0) << "the range did not become a resident group";

  Published right;
  right.changing();
  std::atomic<int> request{-1}, granted{-1};
  std::atomic<bool> stop{false};
  struct Checker {
    std::atomic<uint64_t> checked{0};
    uint64_t checks = 0, stale = 0, bad_grants = 0;
    std::string first;
  };
  std::vector<Checker> checkers(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Checker &c = checkers[i];
      int served = -1;
      while (!stop.load()) {
        int r = request.load();
        if (r > served && r % kThreads == i) {
          served = r;
          int k = region_key(m);  // 0: the group is in the page table after a fallback
          if (mprotect(m, kBytes, RW) != 0 || (k > 0 && own_rights(k) != 2)) ++c.bad_grants;
          granted.store(r);
        }
        uint64_t seen;
        int key, got;
        int ok = right.check(&seen, &key, &got);
        if (ok >= 0) {
          ++c.checks;
          if (!ok && c.stale++ == 0) {
            std::ostringstream msg;
            msg << "read " << rights_name(got) << " on key " << key << " after mprotect("
                << rights_name(static_cast<int>(seen & 3)) << ") returned";
            c.first = msg.str();
          }
          c.checked.store(seen);
        }
        spin_pause();
      }
    });
  }
  auto wait_checks = [&] {
    uint64_t want = right.state.load();
    for (Checker &c : checkers)
      while (c.checked.load() != want) spin_pause();
  };
  uint64_t emulated0 = counter(mpk::Hot::legacy_emulated), signals0 = counter(&mpk::Stats::revocation_signals);
  uint64_t fallbacks0 = counter(&mpk::Stats::sync_fallbacks);
  int bad_calls = 0, fell_back = 0;
  // A revocation, published with the group's key unless its sync fell back (under
  // ThreadSanitizer a few do; the group is then in the page table until the next grant).
  auto revoke = [&](int prot) {
    right.changing();
    uint64_t f0 = counter(&mpk::Stats::sync_fallbacks);
    if (mprotect(m, kBytes, prot) != 0) ++bad_calls;
    int key = region_key(m);
    if (counter(&mpk::Stats::sync_fallbacks) != f0 || key <= 0) {
      ++fell_back;
      return;
    }
    right.settled(prot, key);
    wait_checks();
  };
  for (int r = 0; r < kRounds; ++r) {
    right.changing();  // the granted thread holds more than the last settled right from now on
    request.store(r);
    while (granted.load() != r) spin_pause();
    revoke(PROT_READ);
    revoke(PROT_NONE);
  }
  stop.store(true);
  for (auto &t : threads) t.join();
  EXPECT_EQ(bad_calls, 0);
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(checkers[i].bad_grants, 0u) << "thread " << i << ": mprotect(RW) failed or did not grant its caller";
    EXPECT_EQ(checkers[i].stale, 0u) << "thread " << i << ": " << checkers[i].first;
    EXPECT_GE(checkers[i].checks, uint64_t{2} * kRounds - 2 * fell_back);
  }
  RecordProperty("sync_fallbacks", fell_back);
  EXPECT_GE(counter(mpk::Hot::legacy_emulated) - emulated0, uint64_t{3} * (kRounds - fell_back)) << "calls served by PKRU";
  EXPECT_GE(counter(&mpk::Stats::revocation_signals) - signals0, uint64_t(kRounds - fell_back));
#if defined(__SANITIZE_THREAD__)
  EXPECT_LE(fell_back, kRounds / 50);
#else
  EXPECT_EQ(counter(&mpk::Stats::sync_fallbacks), fallbacks0);
#endif
  EXPECT_EQ(munmap(m, kBytes), 0);
}

// pthread_sigmask cannot block the sync signal under the shim (it keeps the program's view), so
// a thread that blocks every signal is still revoked in time. Blocking it behind the shim's back
// (the raw system call) makes the revocation fall back to the page table, and still return.
TEST_F(ShimSimThreads, ThreadBlockingSignalsIsRevoked) {
  uint8_t *m = HotMapping();
  ASSERT_NE(m, nullptr) << strerror(errno);
  ASSERT_GT(region_key(m), 0);
  std::atomic<int> stage{0};
  std::atomic<int> rights_after{-2};
  std::atomic<int> key{region_key(m)};
  std::thread t([&] {
    auto step = [&](int from, int to) {
      while (stage.load() != from) spin_pause();
      stage.store(to);
    };
    sigset_t all, old;
    sigfillset(&all);
    // 1. Take the grant, block every signal the ordinary way.
    while (stage.load() != 1) spin_pause();
    if (mprotect(m, kBytes, RW) != 0 || own_rights(key.load()) != 2) rights_after.store(-1);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    step(1, 2);
    // 3. Revoked meanwhile: the register says so.
    while (stage.load() != 3) spin_pause();
    rights_after.store(own_rights(key.load()));
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    // 4. Take the grant again, then block every signal with the raw system call.
    while (stage.load() != 4) spin_pause();
    if (mprotect(m, kBytes, RW) != 0) rights_after.store(-1);
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, &old, sizeof(uint64_t));
    step(4, 5);
    while (stage.load() != 6) spin_pause();
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, nullptr, sizeof(uint64_t));
    stage.store(7);
  });

  uint64_t fallbacks0 = counter(&mpk::Stats::sync_fallbacks);
  stage.store(1);
  while (stage.load() != 2) spin_pause();
  ASSERT_EQ(mprotect(m, kBytes, PROT_NONE), 0);
  EXPECT_EQ(counter(&mpk::Stats::sync_fallbacks), fallbacks0) << "pthread_sigmask blocked the sync signal";
  stage.store(3);
  while (rights_after.load() == -2) spin_pause();
  EXPECT_EQ(rights_after.load(), 0) << "the thread still holds " << rights_name(rights_after.load());

  key.store(region_key(m));
  stage.store(4);
  while (stage.load() != 5) spin_pause();
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(mprotect(m, kBytes, PROT_NONE), 0);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 2000);
  EXPECT_EQ(counter(&mpk::Stats::sync_fallbacks), fallbacks0 + 1);
  EXPECT_EQ(maps_perms(m), "---p") << "the page table must hold the revocation";
  stage.store(6);
  t.join();
  EXPECT_EQ(munmap(m, kBytes), 0);
}

// Threads come and go while the main thread revokes: each new thread takes the grant with its
// own mprotect (so revocations have someone to signal) and exits at once. Every call returns,
// every thread is registered, and natively no sync falls back.
TEST_F(ShimSimThreads, ThreadsComeAndGoWhileRevocationsRun) {
  constexpr int kThreads = 300;
  uint8_t *m = HotMapping();
  ASSERT_NE(m, nullptr) << strerror(errno);
  ASSERT_GT(region_key(m), 0);
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<uint64_t> revocations{0};  // mprotect(NONE) calls the main thread has finished
  uint64_t registered0 = counter(&mpk::Stats::threads_registered), fallbacks0 = counter(&mpk::Stats::sync_fallbacks);
  uint64_t signals0 = counter(&mpk::Stats::revocation_signals);
  std::thread creator([&] {
    for (int i = 0; i < kThreads; ++i) {
      std::thread t([&] {
        if (mprotect(m, kBytes, RW) != 0) bad.fetch_add(1);
        // Stay until a revocation has begun and ended after the grant: it had this thread to
        // signal (unless another new thread's grant came in between, which is why the count of
        // signals is only required to grow).
        uint64_t seen = revocations.load();
        while (revocations.load() < seen + 2 && !done.load()) spin_pause();
      });
      t.join();
    }
    done.store(true);
  });
  // (No right is checked here: a new thread's mprotect(RW) is process-wide, and may land between
  // a revocation and any read of it.)
  int calls = 0, bad_calls = 0;
  while (!done.load()) {
    if (mprotect(m, kBytes, PROT_NONE) != 0) ++bad_calls;
    revocations.fetch_add(1);
    ++calls;
    spin_pause();
  }
  creator.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(bad_calls, 0) << "of " << calls << " mprotect calls failed: " << strerror(errno);
  EXPECT_GE(counter(&mpk::Stats::threads_registered) - registered0, uint64_t{kThreads + 1});
  EXPECT_GT(counter(&mpk::Stats::revocation_signals), signals0);
  uint64_t fallbacks = counter(&mpk::Stats::sync_fallbacks) - fallbacks0;
  RecordProperty("sync_fallbacks", static_cast<int>(fallbacks));
#if !defined(__SANITIZE_THREAD__)
  EXPECT_EQ(fallbacks, 0u);
#endif
  EXPECT_EQ(munmap(m, kBytes), 0);
}

// Keyed exceptions (legacy.h): each worker opens and closes a page of its own inside a group
// (their fast path, on the page's own key) while the main thread sets the whole group again and
// again (the slow path, which sets every keyed exception too). Nothing may be lost: once the main
// thread's last call returns, every thread holds at most that right on every key, and the pages
// are still keyed exceptions.
TEST_F(ShimSimThreads, KeyedExceptionsToggleWhileTheWholeGroupIsSet) {
  constexpr int kWorkers = 2, kRounds = 3000;
  constexpr size_t kBig = 4 * 4096;
  void *p = mmap(nullptr, kBig, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto *m = static_cast<uint8_t *>(p);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(mprotect(m, kBig, PROT_READ) | mprotect(m, kBig, RW), 0);
  ASSERT_EQ(mprotect(m, kBig, PROT_READ), 0);
  const int key = region_key(m);
  ASSERT_GT(key, 0) << "the range did not become a resident group";
  uint64_t exceptions0 = counter(&mpk::Stats::exceptions), emulated0 = counter(mpk::Hot::legacy_emulated);

  std::atomic<int> phase{0};  // 2: the main thread's last call returned
  std::atomic<int> ready{0}, bad{0}, stale{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      uint8_t *page = m + (w + 1) * 4096;
      for (int r = 0; r < kRounds; ++r) {
        if (mprotect(page, 4096, RW) != 0) ++bad;
        page[r % 4096] = static_cast<uint8_t>(r);
        if (mprotect(page, 4096, PROT_READ) != 0) ++bad;
      }
      ready.fetch_add(1);
      while (phase.load() != 2) spin_pause();
      // A worker was given nothing but its own page's right (grants are per key and this one's
      // own): no key may give it more than the last call's right.
      for (int k = 1; k < 16; ++k)
        if (own_rights(k) > rights_of(PROT_READ)) ++stale;
    });
  }
  uint64_t whole = 0;  // the main thread's calls on the whole group, until the workers are done
  for (; ready.load() != kWorkers || whole < 2; ++whole)
    if (mprotect(m, kBig, whole % 2 ? PROT_READ : RW) != 0) ++bad;
  ASSERT_EQ(mprotect(m, kBig, PROT_READ), 0);
  phase.store(2);
  for (auto &t : workers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(stale.load(), 0) << "a thread holds more than the whole group's last permission";
  EXPECT_LE(own_rights(key), rights_of(PROT_READ));
  EXPECT_EQ(region_key(m), key);
  // Each page became a keyed exception once (a plain one would count again at every call);
  // every later call was a PKRU write.
  EXPECT_EQ(counter(&mpk::Stats::exceptions) - exceptions0, static_cast<uint64_t>(kWorkers));
  EXPECT_GE(counter(mpk::Hot::legacy_emulated) - emulated0, whole + 1 + kWorkers * (2 * kRounds - 1));
  ASSERT_EQ(munmap(m, kBig), 0);
}

// A program that leaves a SIGSEGV handler with siglongjmp (a common way back from a fault) has
// ended the handler as far as the shim is concerned: revocations reach the thread afterwards at
// once. (Taken for still inside a handler, the thread would defer every sync signal and each
// revocation would give up after 2 s and fall back to the page table.)
sigjmp_buf g_jump_back;
void jump_back(int) { siglongjmp(g_jump_back, 1); }

TEST_F(ShimSimThreads, ASiglongjmpOutOfAHandlerEndsIt) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer owns SIGSEGV and the longjmp family (a sanitized shim does not interpose "
                  "them): the plain build runs this";
#endif
  struct sigaction sa{}, old{};
  sa.sa_handler = jump_back;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGSEGV, &sa, &old), 0);
  // The program set no SIGSEGV handler: the default, not the shim's handler, whatever the kernel
  // holds (restoring it below must not make the shim's handler the program's).
  EXPECT_EQ(old.sa_handler, SIG_DFL);
  void *hole = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  ASSERT_EQ(munmap(hole, 4096), 0);
  volatile int jumped = 0;
  for (int i = 0; i < 3; ++i)
    if (sigsetjmp(g_jump_back, 1) == 0) *static_cast<volatile int *>(hole) = 1;  // unmapped: a fault of its own
    else jumped = jumped + 1;
  ASSERT_EQ(sigaction(SIGSEGV, &old, nullptr), 0);
  ASSERT_EQ(jumped, 3);

  uint8_t *m = HotMapping();
  ASSERT_NE(m, nullptr) << strerror(errno);
  const int key = region_key(m);
  ASSERT_GT(key, 0) << "the range did not become a resident group";
  uint64_t fallbacks0 = counter(&mpk::Stats::sync_fallbacks), signals0 = counter(&mpk::Stats::revocation_signals);
  constexpr int kRounds = 20;
  std::atomic<bool> done{false};
  // The main thread holds read/write (it made the range so) and writes it while another thread
  // revokes and grants it again, ending with a revocation.
  std::thread other([&] {
    for (int i = 0; i < kRounds; ++i)
      if (mprotect(m, kBytes, PROT_READ) != 0 || (i + 1 < kRounds && mprotect(m, kBytes, RW) != 0)) break;
    done.store(true);
  });
  while (!done.load()) m[1] = 1;
  other.join();
  EXPECT_LE(own_rights(key), rights_of(PROT_READ)) << "the last revocation did not reach this thread";
  EXPECT_EQ(counter(&mpk::Stats::sync_fallbacks), fallbacks0) << "a revocation gave up on this thread";
  // One signal per revocation at most (usually none: this thread's first write after each grant
  // is a simulated one, so it may hold nothing to revoke).
  EXPECT_LE(counter(&mpk::Stats::revocation_signals) - signals0, static_cast<uint64_t>(2 * kRounds));
  ASSERT_EQ(munmap(m, kBytes), 0);
}

// No program handler runs inside the shim's sync handler: that handler blocks every
// asynchronous signal while it works (a program handler that jumped out of it would leave the
// shim's work half done). A program handler that interrupted it would find the sync signal in
// the interrupted context's mask, which the thread's own code never blocks under the shim.
std::atomic<int> g_usr1_calls{0}, g_usr1_inside_sync{0};
int g_sync_signal = 0;
void note_interrupted_mask(int, siginfo_t *, void *uc) {
  g_usr1_calls.fetch_add(1, std::memory_order_relaxed);
  uint64_t mask;
  std::memcpy(&mask, &static_cast<ucontext_t *>(uc)->uc_sigmask, sizeof mask);
  if ((mask >> (g_sync_signal - 1)) & 1) g_usr1_inside_sync.fetch_add(1, std::memory_order_relaxed);
}

TEST_F(ShimSimThreads, ProgramHandlersNeverRunInsideTheSyncHandler) {
  constexpr int kRounds = 3000;
  const char *env = getenv("MPK_SYNC_SIGNAL");
  g_sync_signal = env ? atoi(env) : SIGRTMAX - 2;
  uint8_t *m = HotMapping();
  ASSERT_NE(m, nullptr) << strerror(errno);
  ASSERT_GT(region_key(m), 0);
  struct sigaction sa, old;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = note_interrupted_mask;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);

  std::atomic<int> round{0}, taken{-1};
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::thread holder([&] {
    // Takes the write right each round, so each revocation signals this thread.
    for (int served = -1; !stop.load();) {
      int r = round.load();
      if (r > served) {
        served = r;
        if (mprotect(m, kBytes, RW) != 0) ++bad;
        taken.store(r);
      }
      spin_pause();
    }
  });
  pthread_t target = holder.native_handle();
  std::thread sender([&] {
    while (!stop.load()) {
      pthread_kill(target, SIGUSR1);
      spin_pause();
    }
  });
  uint64_t syncs0 = counter(&mpk::Stats::revocation_signals);
  for (int r = 0; r < kRounds; ++r) {
    round.store(r);
    while (taken.load() != r) spin_pause();
    if (mprotect(m, kBytes, PROT_READ) != 0) ++bad;
  }
  stop.store(true);
  sender.join();
  holder.join();
  ASSERT_EQ(sigaction(SIGUSR1, &old, nullptr), 0);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(counter(&mpk::Stats::revocation_signals) - syncs0, 0u) << "no revocation signalled the thread";
  EXPECT_GT(g_usr1_calls.load(), 0);
  EXPECT_EQ(g_usr1_inside_sync.load(), 0) << "of " << g_usr1_calls.load() << " program handlers run";
  EXPECT_EQ(munmap(m, kBytes), 0);
}

}  // namespace

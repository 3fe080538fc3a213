// sim_test_util.h - helpers for the simulated-keys suite (mpk_sim_tests).
//
// The suite drives the engine through the public C API (<mpk.h>) on any CPU: with MPK_SIMULATE=1
// every thread has a software PKRU register that the engine reads and writes exactly where it
// would use RDPKRU/WRPKRU, and the inter-thread sync (tgkill, membarrier, acks, signal-frame PKRU)
// is real. The test binary links the engine statically (core + core/api), so a thread reads its
// own simulated register with mpk::rdpkru(), the same accessor the engine uses.
//
// Rights are checked against a thread's own register, read by that thread. A check made while
// another thread changes a group's right is only sound if it is known to have happened after the
// change returned: PublishedRight gives every check that guarantee (or discards it).
#pragma once

#include "maps_perms.h"

#include <mpk.h>

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu.h"
#include "stats.h"

namespace simt {

constexpr int RW = PROT_READ | PROT_WRITE;

#if defined(__SANITIZE_THREAD__)
constexpr bool kUnderTsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kUnderTsan = true;
#else
constexpr bool kUnderTsan = false;
#endif
#else
constexpr bool kUnderTsan = false;
#endif
constexpr size_t kPage = 4096;

// mpk_init(100) once per process. False (with the reason in *why) when the library cannot run
// here: MPK_SIMULATE is not set and the CPU has no PKU.
bool init(std::string *why);

// The fixture every test uses: init() or skip; a per-test alarm so that a hang fails the run.
class SimTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
};

// The calling thread's right on hardware key `key` in its own PKRU register (simulated or not).
inline mpk::Rights own_rights(int key) {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  uint32_t v = mpk::rdpkru();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return mpk::pkru_rights(v, key);
}
inline mpk::Rights rights_of(int prot) {
  return (prot & PROT_WRITE) ? mpk::Rights::kReadWrite : (prot & PROT_READ) ? mpk::Rights::kRead : mpk::Rights::kNone;
}
const char *name(mpk::Rights r);

// One pass of a spin loop. sched_yield gives the CPU away (more threads than cores); the
// clock_gettime call is there for ThreadSanitizer, which defers asynchronous signals until the
// thread passes through an intercepted libc function (sched_yield is not one): without it a
// spinning thread would take the sync signal only after the engine's ack deadline.
void spin_pause();

// A vkey no other test in this process uses.
int fresh_vkey();

// mpk_mmap(vkey, pages, ceiling) checked; mpk_munmap at scope exit (frees its hardware key).
class Group {
 public:
  explicit Group(size_t pages = 1, int ceiling = RW, int vkey = fresh_vkey());
  ~Group();
  Group(const Group &) = delete;
  Group &operator=(const Group &) = delete;
  int vkey() const { return vkey_; }
  uint8_t *base() const { return base_; }
  size_t bytes() const { return pages_ * kPage; }
  bool ok() const { return base_ != nullptr; }

 private:
  int vkey_;
  size_t pages_;
  uint8_t *base_ = nullptr;
};

// The hardware key of a closed group (process-wide PROT_NONE, no domain of this thread on it, a
// ceiling that allows reading), found by opening it for reading with mpk_mprotect and seeing
// which key's bits changed in this thread's register; the group is closed again. 0 when no
// single key changed. Call it while no other thread changes rights.
int key_of(int vkey);

// The hardware key of vkey while this thread holds a domain on it (the group is pinned: its key
// cannot change before mpk_end). The domain is switched between NONE and `open` (a right within
// the ceiling) and the keys that followed both switches are kept; a key of another group moves
// between the two reads only when another thread's call lands there, which repeating rules out.
// Opens the domain if needed and leaves it at `open`. Returns the key, or 0. Safe while other
// threads change rights.
int domain_key(int vkey, int open);

// The engine's statistics (the JSON that MPK_STATS writes) and one number from them.
std::string stats_json();
uint64_t stat(const char *name);
std::string stat_text(const char *name);  // a string field ("backend")


// A group's process-wide right and hardware key as one thread publishes them while it changes
// the right, and the check the other threads make against their own register.
//
// The publisher calls changing() before mpk_mprotect and settled(prot, key) after it returned. A
// checker reads the published state, then its PKRU, then the state again: when both reads see
// the same settled state, the register was read after that mpk_mprotect returned and before the
// next one began, so it must give exactly the settled right on that key (README "The API": when
// mpk_mprotect returns every thread without a domain has exactly prot). Anything else is discarded.
class PublishedRight {
 public:
  void changing() { state_.store(next() | kChanging, std::memory_order_seq_cst); }
  void settled(int prot, int key) {
    state_.store(next() | static_cast<uint64_t>(key) << 2 | static_cast<uint64_t>(rights_of(prot)),
                 std::memory_order_seq_cst);
  }
  uint64_t state() const { return state_.load(std::memory_order_seq_cst); }
  static uint64_t round_of(uint64_t state) { return state >> 8; }

  enum class Check { kDiscarded, kOk, kStale };
  struct Result {
    Check check;
    uint64_t state;  // the settled state the check was made under
    int key;
    mpk::Rights want, got;
  };
  // Made by the checking thread on its own register.
  Result check() const;

 private:
  static constexpr uint64_t kChanging = 3;
  uint64_t next() { return (state_.load(std::memory_order_relaxed) & ~uint64_t{0xff}) + 0x100; }
  std::atomic<uint64_t> state_{0};  // sequence << 8 | key << 2 | (Rights or kChanging)
};

// The two groups the concurrency tests use: g, whose process-wide right one thread changes and
// publishes (right; it starts closed, on key), and d, on which threads open domains (on dkey).
struct GroupPair {
  Group g{1, RW}, d{1, RW};
  int key = 0, dkey = 0;
  PublishedRight right;
  // Both groups mapped, both keys found, g published closed.
  ::testing::AssertionResult ready();
};

// Syncs that fell back to the page table so far (the statistics' sync_fallbacks). The tests make
// none natively. Under ThreadSanitizer a few happen: it runs a signal handler only when the thread
// passes through an intercepted libc call, so a thread that takes the sync signal just before it
// enters the engine, then waits there for the lock the revoker holds, never acks in time (and a
// thread preempted while TSan runs its deferred handlers has every signal blocked). The engine
// then moves the group to the page table, which is correct but ends its key and its domains: a
// check that spans a fallback is discarded, and the test says how many were.
inline uint64_t fallbacks() { return mpk::stats().sync_fallbacks.load(); }

// Under ThreadSanitizer, passes through an intercepted call (where deferred signals are taken)
// right before the thread enters the engine; nothing natively.
inline void before_call() {
  if constexpr (kUnderTsan) spin_pause();
}

// Opens a domain (mpk_begin(vkey, PROT_READ)) on each of vkeys in order until one fails; returns
// how many succeeded and the errno of the failure (0 if none failed). The domains stay open:
// end_first(vkeys, pinned) closes them.
struct PinResult {
  int pinned = 0;
  int err = 0;
};
PinResult pin_until_failure(const std::vector<int> &vkeys);
void end_first(const std::vector<int> &vkeys, int n);

}  // namespace simt

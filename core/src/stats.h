// stats.h - the engine's counters, generated from two lists.
//
// MPK_COUNTERS are relaxed atomics bumped on slow paths, safe from any thread and from signal
// handlers. MPK_HOT_COUNTERS are bumped on the fast paths (every PKRU write, every emulated
// mprotect): each thread owns a slot of its own and bumps it with a plain load and store, so no
// cache line is shared and no locked instruction runs; readers sum the slots (hot_total). A thread
// that exits folds its slot into a shared one and frees it. Counters are appended, never
// reordered: the stats page (stats_page.h) is read by mpk-stat. stats_json() renders them (with
// the library version) as one JSON object.
#pragma once

#include <atomic>
#include <cstdint>

#define MPK_COUNTERS(X)                                                           \
  X(mprotect_by_page_table, "mpk_mprotect calls served by mprotect (not resident)") \
  X(cache_misses, "key cache misses")                                             \
  X(loads, "groups loaded into a hardware key")                                   \
  X(evictions, "groups evicted from a hardware key")                              \
  X(sync_rounds, "inter-thread synchronizations")                                 \
  X(revocation_signals, "sync signals sent")                                      \
  X(sync_fallbacks, "syncs that fell back to the page table")                     \
  X(threads_registered, "threads registered")                                     \
  X(heap_allocs, "mpk_malloc allocations")                                        \
  X(heap_frees, "mpk_free calls")                                                 \
  X(bad_frees, "invalid or double mpk_free calls")                                \
  X(legacy_passthrough, "mprotect calls passed to the kernel")                    \
  X(promotions, "ranges promoted to page groups")                                 \
  X(dissolves, "page groups given back to the page table")                        \
  X(lazy_grants, "faults repaired by a lazy grant")                               \
  X(efault_repairs, "system calls retried after an EFAULT repair")                \
  X(violations, "protection faults that were the program's own")                 \
  X(exceptions, "mprotect calls on part of a group served as a new page-level exception")  \
  X(vma_joins, "mremap calls whose old range was joined back into one VMA first")   \
  X(region_allocs, "allocations served by a region heap")                         \
  X(region_frees, "region heap blocks freed")                                     \
  X(region_unserved, "allocations a heap region matched but could not serve (glibc's)") \
  X(lock_biases, "key locks biased to the thread that kept taking them")           \
  X(bias_revocations, "key lock biases taken back (membarrier)")

#define MPK_HOT_COUNTERS(X)                                                       \
  X(wrpkru, "PKRU writes made by the engine (either backend)")                    \
  X(begin_calls, "mpk_begin calls")                                               \
  X(end_calls, "mpk_end calls")                                                   \
  X(mprotect_calls, "mpk_mprotect calls")                                         \
  X(mprotect_by_pkru, "mpk_mprotect calls served by PKRU (group resident)")      \
  X(cache_hits, "key cache hits")                                                 \
  X(legacy_calls, "mprotect calls seen by the shim")                              \
  X(legacy_emulated, "mprotect calls served by PKRU")

namespace mpk {

struct Stats {
#define MPK_DECLARE_COUNTER(name, doc) std::atomic<uint64_t> name{0};
  MPK_COUNTERS(MPK_DECLARE_COUNTER)
#undef MPK_DECLARE_COUNTER
};

// Where the counters live: a static block from the start, moved into the shared stats page
// (stats_page.h) when the shim publishes one, so that other processes can read them live.
extern constinit std::atomic<Stats *> g_stats_at;
inline Stats &stats() { return *g_stats_at.load(std::memory_order_relaxed); }

inline void bump(std::atomic<uint64_t> &c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }

enum class Hot : int {
#define MPK_HOT_ENUM(name, doc) name,
  MPK_HOT_COUNTERS(MPK_HOT_ENUM)
#undef MPK_HOT_ENUM
  kCount
};
constexpr int kHotCount = static_cast<int>(Hot::kCount);

// One thread's hot counters. Slot 0 is shared (threads past the table, and the totals of threads
// that exited): it alone is bumped with atomic adds.
struct alignas(64) HotSlot {
  std::atomic<int32_t> owner{0};  // tid, 0 free; slot 0 is never owned
  std::atomic<uint64_t> c[kHotCount] = {};
};
constexpr int kHotSlots = 1024;

// Where the slots live: a static table, moved with the counters into the shared stats page.
extern constinit std::atomic<HotSlot *> g_hot_at;
extern constinit thread_local int t_hot_slot __attribute__((tls_model("initial-exec")));  // -1: none yet
// The calling thread's own slot (null until claimed, and for the shared slot 0). When the slots
// move (stats_page.h) only the calling thread exists, and its pointer moves with them.
extern constinit thread_local HotSlot *t_hot __attribute__((tls_model("initial-exec")));
int claim_hot_slot();
// Folds the calling thread's slot into slot 0 and frees it (thread exit).
void release_hot_slot();

inline void bump_hot(Hot h, uint64_t n = 1) {
  if (HotSlot *own = t_hot) {
    std::atomic<uint64_t> &c = own->c[static_cast<int>(h)];
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    return;
  }
  int s = t_hot_slot < 0 ? claim_hot_slot() : t_hot_slot;
  std::atomic<uint64_t> &c = g_hot_at.load(std::memory_order_relaxed)[s].c[static_cast<int>(h)];
  if (s == 0) {
    c.fetch_add(n, std::memory_order_relaxed);
  } else {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
}
// A fast path's counters at once: its PKRU writes (n), the call and its outcome (b, c; kCount:
// none). One look at the thread's slot.
inline void bump_hot_call(uint64_t n, Hot b, Hot c = Hot::kCount) {
  if (HotSlot *own = t_hot) [[likely]] {
    auto add = [own](Hot h, uint64_t v) {
      std::atomic<uint64_t> &x = own->c[static_cast<int>(h)];
      x.store(x.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
    };
    add(Hot::wrpkru, n);
    add(b, 1);
    if (c != Hot::kCount) add(c, 1);
    return;
  }
  bump_hot(Hot::wrpkru, n);
  bump_hot(b);
  if (c != Hot::kCount) bump_hot(c);
}
inline uint64_t hot_total(const HotSlot *slots, Hot h) {
  uint64_t sum = 0;
  for (int i = 0; i < kHotSlots; ++i) sum += slots[i].c[static_cast<int>(h)].load(std::memory_order_relaxed);
  return sum;
}
inline uint64_t hot_total(Hot h) { return hot_total(g_hot_at.load(std::memory_order_acquire), h); }

// Writes {"version":..., counters..., plus the gauges given} into buf; returns its length.
int stats_json(char *buf, int cap, int groups, int resident_groups, int hw_keys);

}  // namespace mpk

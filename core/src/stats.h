// stats.h - the engine's counters, generated from one list.
//
// Each counter is a relaxed atomic, safe to bump from any thread and from signal handlers.
// Counters are appended, never reordered: the stats page (stats_page.h) is read by mpk-stat.
// stats_json() renders them (with the library version) as one JSON object.
#pragma once

#include <atomic>
#include <cstdint>

#define MPK_COUNTERS(X)                                                           \
  X(begin_calls, "mpk_begin calls")                                               \
  X(end_calls, "mpk_end calls")                                                   \
  X(mprotect_calls, "mpk_mprotect calls")                                         \
  X(mprotect_by_pkru, "mpk_mprotect calls served by PKRU (group resident)")      \
  X(mprotect_by_page_table, "mpk_mprotect calls served by mprotect (not resident)") \
  X(cache_hits, "key cache hits")                                                 \
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
  X(legacy_calls, "mprotect calls seen by the shim")                              \
  X(legacy_emulated, "mprotect calls served by PKRU")                             \
  X(legacy_passthrough, "mprotect calls passed to the kernel")                    \
  X(promotions, "ranges promoted to page groups")                                 \
  X(dissolves, "page groups given back to the page table")                        \
  X(lazy_grants, "faults repaired by a lazy grant")                               \
  X(efault_repairs, "system calls retried after an EFAULT repair")                \
  X(violations, "protection faults that were the program's own")

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

// Writes {"version":..., counters..., plus the gauges given} into buf; returns its length.
int stats_json(char *buf, int cap, int groups, int resident_groups, int hw_keys);

}  // namespace mpk

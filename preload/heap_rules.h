// heap_rules.h - which allocations a heap region (policy `heap = true`) takes, in a form the
// allocator's hot path can test in a few instructions.
//
// The policy's heap regions, in file order, each with its size bounds and, for `module`, the
// address ranges of the executable segments of every loaded module whose file name matches (so
// "which module called malloc?" is a range test on the return address, not a lookup). The table
// is built at start-up and again after each dlopen, into one of two pages that are read-only
// except while being rebuilt; readers take whichever is current.
#pragma once

#include <cstddef>
#include <cstdint>

#include <atomic>

#include "gates.h"
#include "policy.h"

namespace mpk::shim {

inline constexpr int kMaxModuleRanges = 16;

struct HeapRule {
  int region = -1;
  uint32_t match = 0;  // cfg::kMatch* bits the region gives
  uint64_t min_size = 0, max_size = UINT64_MAX;
  int nranges = 0;
  struct Range { uintptr_t lo, hi; } ranges[kMaxModuleRanges];
  const cfg::CallerPattern *caller = nullptr;  // kMatchCaller: in the policy's arena copy
  bool gated = false;  // the region has gates: what is allocated inside them is its
};

struct alignas(4096) HeapRules {
  int count = 0;
  // A filter the allocator tests inline: the sizes any rule that can match at all takes (a module
  // rule whose modules are not loaded cannot), and whether a rule takes its gates' allocations.
  uint64_t size_lo = UINT64_MAX, size_hi = 0;  // [lo, hi]; empty while lo > hi
  bool gated = false;
  HeapRule rules[cfg::kMaxHeapRegions];
};

// The current table (count 0 until heap_rules_build() found heap regions and the region heaps'
// reservation was made).
extern std::atomic<const HeapRules *> g_heap_rules;
inline const HeapRules &heap_rules() { return *g_heap_rules.load(std::memory_order_acquire); }

// Can an allocation of `size` match a rule of t? (Cheap and inline; heap_rule_match decides.)
inline bool heap_rules_may_match(const HeapRules &t, size_t size) {
  return (size >= t.size_lo && size <= t.size_hi) || (t.gated && gate_regions());
}
// Builds the table from the policy (start-up, after the policy has its arena copy).
void heap_rules_build(const cfg::Policy &policy);
// After a dlopen: module ranges again (no-op without module criteria).
void heap_rules_refresh();

// The region an allocation of `size` bytes, asked for by code at `ret` (the allocator's return
// address), is served from; -1 for glibc. Unwinds the stack only for a region whose other
// criteria hold. Not async-signal-safe when a caller criterion is reached (neither is malloc).
int heap_rule_match(const HeapRules &rules, size_t size, const void *ret);

}  // namespace mpk::shim

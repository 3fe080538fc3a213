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
  HeapRule rules[cfg::kMaxHeapRegions];
};

// The current table (never null; count 0 until heap_rules_build() found heap regions and the
// region heaps' reservation was made).
const HeapRules &heap_rules();
// Builds the table from the policy (start-up, after the policy has its arena copy).
void heap_rules_build(const cfg::Policy &policy);
// After a dlopen: module ranges again (no-op without module criteria).
void heap_rules_refresh();

// The region an allocation of `size` bytes, asked for by code at `ret` (the allocator's return
// address), is served from; -1 for glibc. Unwinds the stack only for a region whose other
// criteria hold. Not async-signal-safe when a caller criterion is reached (neither is malloc).
int heap_rule_match(const HeapRules &rules, size_t size, const void *ret);

}  // namespace mpk::shim

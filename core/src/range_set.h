// range_set.h - a small set of address ranges, kept sorted and coalesced. Fixed size, no
// allocation; not thread-safe (the engine's lock).
//
// Used for the parts of a thread-toggled group (isolation.h) whose page table is at the group's
// ceiling: a JIT's reservation starts at PROT_NONE and is committed chunk by chunk. When the set
// is full it forgets instead of growing: an add is dropped and a remove that would split drops the
// whole range, so the set only ever holds less than the truth (the caller then does a system call
// it could have spared, never one too few).
#pragma once

#include <cstdint>

namespace mpk {

struct RangeSet {
  static constexpr int kMax = 64;
  struct Range {
    uintptr_t start, end;
  };

  void add(uintptr_t start, uintptr_t end);
  void remove(uintptr_t start, uintptr_t end);
  bool covers(uintptr_t start, uintptr_t end) const;
  // f(start, end) for each part of [lo, hi) the set does not hold, in order.
  template <typename F>
  void for_each_gap(uintptr_t lo, uintptr_t hi, F f) const {
    uintptr_t at = lo;
    for (int i = 0; i < n && at < hi; ++i) {
      if (r[i].end <= at) continue;
      if (r[i].start > at) f(at, r[i].start < hi ? r[i].start : hi);
      at = r[i].end;
    }
    if (at < hi) f(at, hi);
  }

  Range r[kMax];
  int n = 0;
};

}  // namespace mpk

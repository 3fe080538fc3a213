#include "page_group.h"

#include <cstring>

#include "meta_arena.h"

namespace mpk {

bool PageGroup::add_range(MetaArena &arena, uintptr_t start, size_t len) {
  // Merge with an adjacent range when possible: heaps and repeated mmaps grow contiguously.
  for (uint32_t i = 0; i < nranges; ++i) {
    if (ranges[i].start + ranges[i].len == start) {
      ranges[i].len += len;
      return true;
    }
    if (start + len == ranges[i].start) {
      ranges[i].start = start;
      ranges[i].len += len;
      return true;
    }
  }
  if (nranges == cap_ranges) {
    uint32_t cap = cap_ranges ? cap_ranges * 2 : 4;
    auto *r = static_cast<Range *>(arena.alloc(cap * sizeof(Range)));
    if (!r) return false;
    if (ranges) {
      std::memcpy(r, ranges, nranges * sizeof(Range));
      arena.free(ranges, cap_ranges * sizeof(Range));
    }
    ranges = r;
    cap_ranges = cap;
  }
  ranges[nranges++] = Range{start, len};
  return true;
}

bool PageGroup::add_except(uintptr_t start, size_t len) {
  uintptr_t s = start, e = start + len;
  // Merge every exception that overlaps or touches [s, e), until none does.
  for (bool merged = true; merged;) {
    merged = false;
    for (int i = 0; i < nexcepts; ++i) {
      uintptr_t es = excepts[i].start, ee = es + excepts[i].len;
      if (ee < s || es > e || keyed[i]) continue;
      if (es < s) s = es;
      if (ee > e) e = ee;
      drop_except(i);
      merged = true;
      break;
    }
  }
  if (nexcepts == kMaxExcepts) return false;
  excepts[nexcepts++] = Range{s, e - s};
  return true;
}

bool PageGroup::add_keyed(PageGroup *child) {
  if (nexcepts == kMaxExcepts) return false;
  keyed[nexcepts] = child;
  excepts[nexcepts++] = child->ranges[0];
  return true;
}

bool PageGroup::remove_span(MetaArena &arena, uintptr_t start, size_t len) {
  uintptr_t end = start + len;
  for (uint32_t i = 0; i < nranges;) {
    Range r = ranges[i];
    uintptr_t rend = r.start + r.len;
    if (end <= r.start || start >= rend) {
      ++i;
      continue;
    }
    bool keep_head = r.start < start, keep_tail = rend > end;
    if (keep_head && keep_tail) {
      ranges[i].len = start - r.start;
      if (!add_range(arena, end, rend - end)) return false;
      ++i;
    } else if (keep_head) {
      ranges[i].len = start - r.start;
      ++i;
    } else if (keep_tail) {
      ranges[i] = Range{end, rend - end};
      ++i;
    } else {
      ranges[i] = ranges[--nranges];
    }
  }
  return true;
}

bool PageGroup::overlaps(uintptr_t start, size_t len) const {
  for (uint32_t i = 0; i < nranges; ++i)
    if (ranges[i].overlaps(start, len)) return true;
  return false;
}

bool PageGroup::contains(uintptr_t addr) const { return overlaps(addr, 1); }

size_t PageGroup::bytes() const {
  size_t n = 0;
  for (uint32_t i = 0; i < nranges; ++i) n += ranges[i].len;
  return n;
}

}  // namespace mpk

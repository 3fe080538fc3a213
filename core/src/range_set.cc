#include "range_set.h"

namespace mpk {

void RangeSet::add(uintptr_t start, uintptr_t end) {
  if (start >= end) return;
  // Ranges that touch or overlap [start, end) merge into it.
  int i = 0;
  while (i < n && r[i].end < start) ++i;
  int j = i;
  while (j < n && r[j].start <= end) {
    if (r[j].start < start) start = r[j].start;
    if (r[j].end > end) end = r[j].end;
    ++j;
  }
  int removed = j - i;
  if (removed == 0 && n == kMax) return;  // full: not recorded
  // Replace r[i..j) by the merged range.
  int shift = 1 - removed;
  if (shift > 0) {
    for (int k = n - 1; k >= j; --k) r[k + shift] = r[k];
  } else if (shift < 0) {
    for (int k = j; k < n; ++k) r[k + shift] = r[k];
  }
  n += shift;
  r[i] = Range{start, end};
}

void RangeSet::remove(uintptr_t start, uintptr_t end) {
  if (start >= end) return;
  for (int i = 0; i < n;) {
    Range &x = r[i];
    if (x.end <= start || end <= x.start) {
      ++i;
      continue;
    }
    if (start <= x.start && x.end <= end) {  // all of it
      for (int k = i + 1; k < n; ++k) r[k - 1] = r[k];
      --n;
      continue;
    }
    if (x.start < start && end < x.end) {  // the middle: two ranges
      if (n == kMax) {
        for (int k = i + 1; k < n; ++k) r[k - 1] = r[k];
        --n;
        continue;
      }
      for (int k = n - 1; k > i; --k) r[k + 1] = r[k];
      ++n;
      r[i + 1] = Range{end, x.end};
      x.end = start;
      i += 2;
      continue;
    }
    if (x.start < start) x.end = start;
    else x.start = end;
    ++i;
  }
}

bool RangeSet::covers(uintptr_t start, uintptr_t end) const {
  for (int i = 0; i < n; ++i)
    if (r[i].start <= start && end <= r[i].end) return true;
  return false;
}

}  // namespace mpk

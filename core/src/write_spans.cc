#include "write_spans.h"

namespace mpk {

void WriteSpans::open(int32_t rec, int32_t tid, uintptr_t start, uintptr_t end, uintptr_t group_lo,
                      uintptr_t group_hi) {
  lo = group_lo;
  hi = group_hi;
  if (overflow) return;
  for (int i = 0; i < n; ++i) {
    Span &s = spans[i];
    if (s.rec == rec && s.tid == tid && s.start <= start && end <= s.end) return;  // already open
  }
  if (n == kMax) {
    // Full: every thread's spans fold into one covering the whole group.
    int m = 0;
    for (int i = 0; i < n; ++i) {
      bool seen = false;
      for (int j = 0; j < m && !seen; ++j) seen = spans[j].rec == spans[i].rec && spans[j].tid == spans[i].tid;
      if (!seen) spans[m++] = Span{spans[i].rec, spans[i].tid, lo, hi};
    }
    n = m;
    if (holds(rec, tid)) return;
    if (n == kMax) {
      overflow = true;
      return;
    }
    start = lo;
    end = hi;
  }
  spans[n++] = Span{rec, tid, start, end};
}

int WriteSpans::close(uintptr_t start, uintptr_t end, int32_t (*lost)[2], int cap) {
  if (overflow) {
    if (start > lo || end < hi) return 0;
    overflow = false;
    n = 0;
    return kEveryone;
  }
  int32_t touched[kMax][2];
  int ntouched = 0;
  for (int i = 0; i < n;) {
    Span &s = spans[i];
    if (s.end <= start || end <= s.start) {
      ++i;
      continue;
    }
    touched[ntouched][0] = s.rec;
    touched[ntouched++][1] = s.tid;
    if (start <= s.start && s.end <= end) {  // all of it
      spans[i] = spans[--n];
      continue;
    }
    if (s.start < start && end < s.end) {  // the middle: two spans, if there is room
      if (n < kMax) {
        spans[n++] = Span{s.rec, s.tid, end, s.end};
        s.end = start;
      }
    } else if (s.start < start) {
      s.end = start;
    } else {
      s.start = end;
    }
    ++i;
  }
  int nlost = 0;
  for (int i = 0; i < ntouched && nlost < cap; ++i) {
    bool dup = false;
    for (int j = 0; j < i && !dup; ++j) dup = touched[j][0] == touched[i][0] && touched[j][1] == touched[i][1];
    if (!dup && !holds(touched[i][0], touched[i][1])) {
      lost[nlost][0] = touched[i][0];
      lost[nlost++][1] = touched[i][1];
    }
  }
  return nlost;
}

bool WriteSpans::holds(int32_t rec, int32_t tid) const {
  if (overflow) return true;
  for (int i = 0; i < n; ++i)
    if (spans[i].rec == rec && spans[i].tid == tid) return true;
  return false;
}

void WriteSpans::after_fork(int32_t rec, int32_t tid) {
  int m = 0;
  for (int i = 0; i < n; ++i)
    if (spans[i].rec == rec) spans[m++] = Span{rec, tid, spans[i].start, spans[i].end};
  n = m;
}

}  // namespace mpk

// write_spans.h - which parts of a thread-toggled group (isolation.h) each thread has opened for
// writing and nobody has closed since.
//
// Natively, mprotect(part, RW) makes that part writable for every thread until a later call on it
// takes write away again; a JIT may keep several parts open at once (Ruby's YJIT: one page in each
// of its two code blocks, closed block by block). With thread toggles a thread's right covers the
// whole group, so it keeps write as long as any part it opened is still open, and loses it when the
// last one is closed, by whichever thread closes it. Fixed size, no allocation; the engine's lock.
#pragma once

#include <cstdint>

namespace mpk {

struct WriteSpans {
  static constexpr int kMax = 64;
  struct Span {
    int32_t rec;  // the opener's ThreadRecord index
    int32_t tid;  // and its tid (a record can be reused by another thread)
    uintptr_t start, end;
  };

  // Thread (rec, tid) opened [start, end) of the group [lo, hi). When the table is full, each
  // thread's spans become one covering the whole group (it then keeps write until all of it
  // closes); if that is still too many threads, the table overflows: every writer keeps write
  // until a close covers the whole group.
  void open(int32_t rec, int32_t tid, uintptr_t start, uintptr_t end, uintptr_t lo, uintptr_t hi);
  // [start, end) is closed for everyone: cut out of every span (a span that cannot be split for
  // lack of room stays whole, so its thread keeps write: never less than native). Writes to
  // `lost` the threads ({record index, tid}) that had a span and now have none, up to `cap`;
  // returns how many, or kEveryone when an overflowed table was closed whole (every thread that
  // may write loses it; the table is empty again).
  static constexpr int kEveryone = -1;
  int close(uintptr_t start, uintptr_t end, int32_t (*lost)[2], int cap);
  // Does the thread have a part open? (Always true while the table has overflowed.)
  bool holds(int32_t rec, int32_t tid) const;
  // In a fork child: the forking thread (rec) has a new tid, and no other thread exists.
  void after_fork(int32_t rec, int32_t tid);

  Span spans[kMax];
  int n = 0;
  bool overflow = false;
  uintptr_t lo = 0, hi = 0;  // the group's bounds at the last open
};

}  // namespace mpk

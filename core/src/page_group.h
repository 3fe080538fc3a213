// page_group.h - a page group: page ranges that always share one permission, named by a vkey.
//
// `ceiling` is the union of every prot the group was given pages with; `prot` is the process-wide
// permission (what mpk_mprotect last set; PROT_NONE when created: closed). A resident group
// (hw_key > 0) has its pages mapped at page_prot() with that key and the rights live in PKRU; a
// non-resident group sits on key 0 with its pages mapped at `prot`, exact but at page-table cost.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>

#include "cpu.h"

namespace mpk {

class MetaArena;
class Heap;
struct WriteSpans;
struct RangeSet;

struct Range {
  uintptr_t start;
  size_t len;
  bool overlaps(uintptr_t s, size_t n) const { return s < start + len && start < s + n; }
};

struct PageGroup {
  int vkey = -1;
  int hw_key = 0;
  int ceiling = PROT_NONE;
  int prot = PROT_NONE;
  Range *ranges = nullptr;
  uint32_t nranges = 0;
  uint32_t cap_ranges = 0;
  Heap *heap = nullptr;
  // Execute rights: exact (page table follows prot's PROT_EXEC, a system call per change) or at the
  // ceiling (the shim's RW<->RX toggles: pages stay executable, writes are governed by the key).
  bool exec_exact = true;
  // Legacy mprotect emulation (legacy.h): the policy region of the range the group stands for.
  int16_t region = -1;     // policy region index, -1 for the defaults
  int16_t stat_slot = -1;  // its row in the stats page (stats_page.h), -1 if not listed
  uint64_t toggles = 0;    // mprotect calls on the whole group served for it
  uint32_t cuts = 0;       // mprotect calls on part of it (page-level exceptions)
  // Isolation (isolation.h): per-thread rights on a pinned key; audit logs instead of stopping.
  bool isolate = false;
  bool audit = false;
  // Isolated with thread toggles (a JIT's code area): the program's mprotect on any part of it
  // changes the calling thread's right only. The page table is at the ceiling where `raised`
  // says (a reservation starts at PROT_NONE; a call without read rights lowers a part again).
  bool thread_toggles = false;
  WriteSpans *writers = nullptr;  // the parts each thread has open for writing (write_spans.h)
  RangeSet *raised = nullptr;     // the parts whose page table is at the ceiling (range_set.h)
  // Grants signal every thread at once instead of waiting for its first access (sync.h).
  bool eager = false;
  // Page-level exceptions (legacy.h): sub-ranges the program gave a permission of their own. Their
  // pages sit on key 0 at exactly that permission; the rest of the group keeps its key. Page
  // tagging (tag_ranges) leaves them alone; they are folded back into the group when the program
  // sets the whole group's permission again.
  static constexpr int kMaxExcepts = 8;
  Range excepts[kMaxExcepts] = {};
  uint8_t nexcepts = 0;
  // Keyed exceptions: an exception can be a group of its own (keyed[i], whose one range is
  // excepts[i]) with a key of its own, so that the program's calls on it and the group's calls on
  // the whole range are PKRU writes (a JIT opening the page it writes, then its whole code area).
  // Its pages sit on its key; a call on the whole group sets its permission too. Keyed entries
  // never merge with others. At most kMaxKeyed per group, the least recently opened one giving
  // way to a new one.
  static constexpr int kMaxKeyed = 3;
  PageGroup *keyed[kMaxExcepts] = {};
  PageGroup *parent = nullptr;  // set in a keyed exception: the group it is an exception of
  uint64_t opened_at = 0;       // a keyed exception: when a whole-group call last found it apart

  int nkeyed() const {
    int n = 0;
    for (int i = 0; i < nexcepts; ++i) n += keyed[i] != nullptr;
    return n;
  }
  // Adds child's one range as a keyed exception. False if the table is full.
  bool add_keyed(PageGroup *child);
  // Forgets exception i (keyed or not).
  void drop_except(int i) {
    --nexcepts;
    excepts[i] = excepts[nexcepts];
    keyed[i] = keyed[nexcepts];
    keyed[nexcepts] = nullptr;
  }

  // Page-table permission while resident: data rights up to the ceiling (PKRU narrows them per
  // thread); execute exactly as `prot` says (keys never restrict instruction fetch), or the
  // ceiling's when exec is not exact.
  int page_prot() const {
    return exec_exact ? (ceiling & (PROT_READ | PROT_WRITE)) | (prot & PROT_EXEC) : ceiling;
  }
  // Would page_prot() change if the group's permission became p? (Only its execute bit can.)
  bool page_prot_changes(int p) const { return exec_exact && ((p ^ prot) & PROT_EXEC); }

  bool add_range(MetaArena &arena, uintptr_t start, size_t len);
  // Removes [start, start+len) from the group's ranges, splitting where needed.
  bool remove_span(MetaArena &arena, uintptr_t start, size_t len);
  bool overlaps(uintptr_t start, size_t len) const;
  // Adds [start, start+len) to the exceptions, merged with the plain ones it overlaps or touches
  // (the caller made sure it overlaps no keyed one). False if the table is full (nothing changed).
  bool add_except(uintptr_t start, size_t len);
  // Calls f(start, len) for each piece of the group's ranges that is not an exception.
  template <typename F>
  void for_each_tagged(F &&f) const;
  bool contains(uintptr_t addr) const;
  size_t bytes() const;
};

// PROT_* data bits to key rights. PROT_WRITE implies read on x86.
inline Rights rights_of(int prot) {
  if (prot & PROT_WRITE) return Rights::kReadWrite;
  if (prot & PROT_READ) return Rights::kRead;
  return Rights::kNone;
}

// Does `prot` ask for no more than `ceiling` (PROT_WRITE counts as needing a writable ceiling)?
inline bool within_ceiling(int prot, int ceiling) { return (prot & ~ceiling) == 0; }

template <typename F>
void PageGroup::for_each_tagged(F &&f) const {
  for (uint32_t i = 0; i < nranges; ++i) {
    uintptr_t at = ranges[i].start, end = at + ranges[i].len;
    while (at < end) {
      // The first exception that starts at or after `at` inside this range, or one covering it.
      uintptr_t next = end, skip_to = at;
      for (int e = 0; e < nexcepts; ++e) {
        uintptr_t es = excepts[e].start, ee = es + excepts[e].len;
        if (ee <= at || es >= end) continue;
        if (es <= at) {
          if (ee > skip_to) skip_to = ee;
        } else if (es < next) {
          next = es;
        }
      }
      if (skip_to > at) {
        at = skip_to;
        continue;
      }
      f(at, next - at);
      at = next;
    }
  }
}

// Does prot fit the group's ceiling (the shim's legacy mprotect)? With exact execute rights only
// the data bits must fit: a new PROT_EXEC is a retag (set_group_prot), never more data access.
inline bool legacy_fits(const PageGroup &g, int prot) {
  // Exactly PROT_EXEC is execute-only: the kernel gives it its own key and reports faults on it
  // as key faults. Only the kernel can say that, so such a range is left to it.
  if (prot == PROT_EXEC) return false;
  constexpr int kAll = PROT_READ | PROT_WRITE | PROT_EXEC;
  int need = g.exec_exact ? prot & (PROT_READ | PROT_WRITE) : prot;
  return (need & ~g.ceiling) == 0 && (prot & ~kAll) == 0;
}

}  // namespace mpk

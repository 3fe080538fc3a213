#include "mprotect_partial.h"

#include <sys/mman.h>

#include "proc_maps.h"

namespace mpk {

uintptr_t mprotect_applied_end(uintptr_t start, uintptr_t end, int prot) {
  const int want = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
  uintptr_t applied = start;
  bool stopped = false;
  // The VMA being read: its key comes on a later line of its smaps entry (absent: key 0).
  struct {
    bool open = false;
    uintptr_t lo = 0, hi = 0;
    int prot = 0, pkey = 0;
  } cur;
  auto settle = [&] {
    if (!cur.open || stopped) return;
    cur.open = false;
    if (cur.lo != applied || cur.pkey != 0 || cur.prot != want) {
      stopped = true;
      return;
    }
    applied = cur.hi < end ? cur.hi : end;
    if (applied == end) stopped = true;
  };
  for_each_line("/proc/self/smaps", [&](char *line) {
    MappingLine m;
    if (parse_mapping(line, &m)) {
      settle();
      if (stopped || m.lo >= end) return false;
      if (m.hi <= start) return true;
      cur.open = true;
      cur.lo = m.lo < start ? start : m.lo;
      cur.hi = m.hi;
      cur.prot = prot_of_perms(m.perms);
      cur.pkey = 0;
      return true;
    }
    if (cur.open) parse_smaps_pkey(line, &cur.pkey);
    return true;
  });
  settle();
  return applied;
}

}  // namespace mpk

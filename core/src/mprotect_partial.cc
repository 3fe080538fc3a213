#include "mprotect_partial.h"

#include <sys/mman.h>

#include "proc_maps.h"

namespace mpk {

uintptr_t mprotect_applied_end(uintptr_t start, uintptr_t end, int prot) {
  const int want = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
  uintptr_t applied = start;
  for_each_smaps_vma(start, end, [&](const SmapsVma &v) {
    if ((v.lo > start ? v.lo : start) != applied || v.pkey != 0 || prot_of_perms(v.perms) != want) return false;
    applied = v.hi < end ? v.hi : end;
    return applied < end;
  });
  return applied;
}

}  // namespace mpk

// mprotect_partial.h - how far a failed mprotect got.
//
// The kernel applies mprotect one VMA at a time, in address order, and stops at the first VMA it
// refuses (EACCES: a right the mapping may never have, such as write on a file opened read-only)
// or at the first hole (ENOMEM). The VMAs before that point keep the new permission; the rest are
// untouched. When the engine makes such a call for the program on part of a group, the changed
// prefix is from then on the program's memory at the permission it asked for: a page-level
// exception of the group, as if the call had covered only that prefix (legacy.cc).
#pragma once

#include <cstdint>

namespace mpk {

// The end of the prefix of [start, end) that a failed mprotect(prot) on key 0 changed: the VMAs
// from start on, without a gap, that carry key 0 and exactly prot's permissions. start if there
// are none or /proc/self/smaps cannot be read. Reads /proc/self/smaps; no allocation.
uintptr_t mprotect_applied_end(uintptr_t start, uintptr_t end, int prot);

}  // namespace mpk

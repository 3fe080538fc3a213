// vma_join.h - joins back into one VMA private anonymous memory that key tagging left in pieces
// the kernel will not merge.
//
// A range moved onto a key is a VMA of its own. Memory the program maps or first writes next to it
// meanwhile gets its own anon_vma (the kernel shares one only between neighbours whose flags,
// protection key included, agree), and once the range is back on key 0 the pieces have the same
// permissions but can never merge again. Natively they would be one VMA, and mremap, which needs
// its old range inside one VMA, fails with EFAULT under the shim where it succeeds without it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpk {

// If [start, start+len) lies in two or more private anonymous VMAs that the kernel would treat as
// one but for their anon_vma (no hole, the same permissions and flags, and every cut between them
// one that the engine's tagging made: tag_bounds.h), makes
// them one: the first grows over the others, whose contents are copied into it. True if it did;
// false, with nothing changed, otherwise. The caller holds the engine's lock and has put the range
// back on key 0. Reads /proc/self/smaps; no allocation.
bool join_anon_pieces(uintptr_t start, size_t len);

}  // namespace mpk

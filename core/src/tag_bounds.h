// tag_bounds.h - addresses where the engine's key tagging has cut the program's memory.
//
// A pkey_mprotect with one of the engine's keys makes its range a VMA of its own, and what the
// program maps or first writes beside it meanwhile gets an anon_vma of its own: once the range
// is back on key 0 the two can stay separate VMAs where natively they would be one (vma_join.h).
// Only at these addresses is such a cut the engine's doing; anywhere else it is the program's.
// Up to kTagBounds range ends are kept, in sets by address so that noting and looking one up cost
// a few loads (a JIT cutting one page out of its code area notes on every such call); within a
// set the oldest is forgotten first (joins there are then left to the kernel).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpk {

constexpr int kTagBounds = 1024;

// Notes both ends of a range that was just put on a key. Lock-free; safe from any thread.
void note_tag_bounds(uintptr_t start, size_t len);
// Is addr one of the noted ends?
bool is_tag_bound(uintptr_t addr);
// Forgets the ends strictly inside [start, start+len): the memory there was unmapped or replaced
// (its own ends may still separate what is left on either side).
void forget_tag_bounds(uintptr_t start, size_t len);

}  // namespace mpk

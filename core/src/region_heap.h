// region_heap.h - isolated heaps for policy regions that take their memory from the allocator.
//
// Every region heap lives in one address-space reservation made at start-up, so "is this block
// one of ours?" is a subtraction and a compare on every free(); the reservation's bounds are roots
// (read-only once set). Each region's heap is an engine Heap (heap.h): its spans are carved from
// the reservation and belong to one isolated group on the region's key, and its metadata lives in
// the arena, so no block overflow can corrupt it. Allocation and free take the engine's lock: a
// region heap is for memory worth isolating (slabs, tables, key material), not for every malloc.
#pragma once

#include <cstddef>
#include <cstdint>

#include "roots.h"

namespace mpk {

// Address space reserved for all region heaps together (PROT_NONE, not committed).
inline constexpr size_t kRegionHeapReserve = size_t{64} << 30;

// Reserves `bytes` of address space for the region heaps (once, after engine_init and
// legacy_init). Returns 0 or -errno.
int region_heap_reserve(size_t bytes);

inline bool region_heap_owns(const void *p) {
  return reinterpret_cast<uintptr_t>(p) - g_roots.heap_lo < g_roots.heap_len;
}

// A block of `size` bytes aligned to `align` (a power of two, at most 64 KiB) from policy region
// `region`'s heap. nullptr when there is no memory, key or room left in the reservation.
void *region_heap_alloc(int region, size_t size, size_t align);
// Frees a block region_heap_owns(). Returns 0, or -EINVAL (reported) when p is not a live block.
int region_heap_free(void *p);
// The usable size of a live block (0 if p is not one) and the region it belongs to (-1 if none).
size_t region_heap_usable(const void *p, int *region = nullptr);

}  // namespace mpk

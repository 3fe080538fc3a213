#include "region_heap.h"

#include <sys/mman.h>

#include <cerrno>
#include <new>

#include "engine_internal.h"
#include "heap.h"
#include "legacy.h"
#include "raw_log.h"
#include "stats.h"
#include "sys.h"

namespace mpk {

namespace {

constexpr int kMaxRegions = kMaxPolicyRegions;
constexpr int kMaxHoles = 256;  // freed large spans kept for reuse (beyond: the space is not reused)

struct RegionHeaps;

// One region's page source: spans carved from the reservation, made part of its group.
struct Source {
  RegionHeaps *all;
  int region;
};

struct RegionHeaps {
  uintptr_t next = 0, end = 0;  // the untouched rest of the reservation
  struct Hole { uintptr_t base; size_t bytes; } holes[kMaxHoles];
  int nholes = 0;
  Section *section = nullptr;  // the allocation in progress (set under the lock)
  PageGroup *group[kMaxRegions] = {};
  Heap *heap[kMaxRegions] = {};
  Source src[kMaxRegions] = {};
  bool warned_full = false;
};

RegionHeaps *heaps() { return static_cast<RegionHeaps *>(g_roots.region_heaps); }

// Reservation space for `bytes` (a multiple of Heap::kSpanSize): a freed span first, first fit.
uintptr_t carve(RegionHeaps &h, size_t bytes) {
  for (int i = 0; i < h.nholes; ++i) {
    if (h.holes[i].bytes < bytes) continue;
    uintptr_t p = h.holes[i].base;
    h.holes[i].base += bytes;
    h.holes[i].bytes -= bytes;
    if (!h.holes[i].bytes) h.holes[i] = h.holes[--h.nholes];
    return p;
  }
  if (h.end - h.next < bytes) return 0;
  uintptr_t p = h.next;
  h.next += bytes;
  return p;
}

void give_back(RegionHeaps &h, uintptr_t p, size_t bytes) {
  if (p + bytes == h.next) {
    h.next = p;
    return;
  }
  for (int i = 0; i < h.nholes; ++i) {
    if (h.holes[i].base + h.holes[i].bytes == p) { h.holes[i].bytes += bytes; return; }
    if (p + bytes == h.holes[i].base) { h.holes[i].base = p; h.holes[i].bytes += bytes; return; }
  }
  if (h.nholes < kMaxHoles) h.holes[h.nholes++] = {p, bytes};
}

// Back to reserved, inaccessible, uncommitted address space (and key 0: it is a new mapping).
void rereserve(uintptr_t p, size_t bytes) {
  sys::mmap(reinterpret_cast<void *>(p), bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
            -1, 0);
}

void *source_map(void *ctx, size_t bytes) {
  auto *src = static_cast<Source *>(ctx);
  RegionHeaps &h = *src->all;
  uintptr_t p = carve(h, bytes);
  if (!p) {
    if (!h.warned_full) {
      h.warned_full = true;
      MPK_LOG(kError, "the region heaps' %zu GiB of address space is used up: further matching allocations "
              "come from glibc, NOT isolated", g_roots.heap_len >> 30);
    }
    return nullptr;
  }
  // Fresh zeroed pages, committed (the reservation was MAP_NORESERVE), still PROT_NONE on key 0:
  // the group tags them before the block is handed out.
  void *fresh = sys::mmap(reinterpret_cast<void *>(p), bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                          -1, 0);
  if (sys::mmap_failed(fresh)) {
    give_back(h, p, bytes);
    return nullptr;
  }
  EngineState *st = state();
  PageGroup *g = legacy_heap_pages(*st, *h.section, h.group[src->region], src->region, fresh, bytes);
  if (!g) {
    rereserve(p, bytes);
    give_back(h, p, bytes);
    return nullptr;
  }
  h.group[src->region] = g;
  return fresh;
}

void source_unmap(void *ctx, void *p, size_t bytes) {
  auto *src = static_cast<Source *>(ctx);
  RegionHeaps &h = *src->all;
  EngineState *st = state();
  if (PageGroup *g = h.group[src->region]) {
    // Ordering: the group forgets the pages before they go back to the reservation, so no fast
    // path or fault report ever sees them in the group once they are inaccessible.
    KeyLock kl(*st, g->hw_key);
    g->remove_span(g_arena, reinterpret_cast<uintptr_t>(p), bytes);
    if (g->hw_key) publish_view(*st, *g);
  }
  rereserve(reinterpret_cast<uintptr_t>(p), bytes);
  give_back(h, reinterpret_cast<uintptr_t>(p), bytes);
}

Heap *heap_of(RegionHeaps &h, int region) {
  if (!h.heap[region]) {
    void *mem = g_arena.alloc(sizeof(Heap));
    if (!mem) return nullptr;
    h.src[region] = Source{&h, region};
    h.heap[region] = new (mem) Heap(&g_arena, PageSource{source_map, source_unmap, &h.src[region]});
  }
  return h.heap[region];
}

}  // namespace

int region_heap_reserve(size_t bytes) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (g_roots.heap_len) return 0;
  // Aligned to a span, so every span carved from it is.
  size_t over = bytes + Heap::kSpanSize;
  void *raw = sys::mmap(nullptr, over, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (sys::mmap_failed(raw)) return static_cast<int>(reinterpret_cast<intptr_t>(raw));
  uintptr_t a = reinterpret_cast<uintptr_t>(raw);
  uintptr_t lo = (a + Heap::kSpanSize - 1) & ~(Heap::kSpanSize - 1);
  if (lo > a) sys::munmap(raw, lo - a);
  if (a + over > lo + bytes) sys::munmap(reinterpret_cast<void *>(lo + bytes), a + over - (lo + bytes));
  Section s(*st);
  Locked l;
  void *mem = g_arena.alloc(sizeof(RegionHeaps));
  if (!mem) {
    sys::munmap(reinterpret_cast<void *>(lo), bytes);
    return -ENOMEM;
  }
  auto *h = new (mem) RegionHeaps();
  h->next = lo;
  h->end = lo + bytes;
  // Ordering: the state first, the bounds last; free() tests the bounds alone.
  RootsWrite w;
  g_roots.region_heaps = h;
  g_roots.heap_len = bytes;
  g_roots.heap_lo = lo;
  return 0;
}

void *region_heap_alloc(int region, size_t size, size_t align) {
  EngineState *st = state();
  RegionHeaps *h = heaps();
  if (!st || !h || region < 0 || region >= kMaxRegions) return nullptr;
  Section s(*st);
  Locked l;
  Heap *heap = heap_of(*h, region);
  if (!heap) return nullptr;
  h->section = &s;
  void *p = heap->alloc_aligned(size, align);
  h->section = nullptr;
  // This thread's own right on a group made just now reaches its PKRU when the Section ends.
  if (p) bump(stats().region_allocs);
  return p;
}

int region_heap_free(void *p) {
  EngineState *st = state();
  RegionHeaps *h = heaps();
  if (!st || !h) return -EINVAL;
  Section s(*st);
  Locked l;
  Heap::FreeResult r = Heap::FreeResult::kNotOurs;
  for (int i = 0; i < kMaxRegions && r == Heap::FreeResult::kNotOurs; ++i)
    if (h->heap[i]) r = h->heap[i]->free(p);
  if (r == Heap::FreeResult::kOk) {
    bump(stats().region_frees);
    return 0;
  }
  bump(stats().bad_frees);
  MPK_LOG(kError, "free(%p): %s in a region heap; ignored", p,
          r == Heap::FreeResult::kDoubleFree ? "double free"
          : r == Heap::FreeResult::kNotABlock ? "not the start of a block"
                                              : "not a live block (freed already, or never allocated)");
  return -EINVAL;
}

size_t region_heap_usable(const void *p, int *region) {
  if (region) *region = -1;
  EngineState *st = state();
  RegionHeaps *h = heaps();
  if (!st || !h) return 0;
  Section s(*st);
  Locked l;
  for (int i = 0; i < kMaxRegions; ++i) {
    if (!h->heap[i]) continue;
    if (size_t n = h->heap[i]->usable(p)) {
      if (region) *region = i;
      return n;
    }
  }
  return 0;
}

}  // namespace mpk

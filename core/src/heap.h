// heap.h - a per-group allocator whose metadata lives outside the group's pages.
//
// Memory comes in 64 KiB-aligned spans from a PageSource (the engine maps them into the group).
// Small requests (<= 16 KiB) use size-class spans with an out-of-line bitmap; larger ones get spans
// of their own. Because nothing is stored inside the group, allocation and free work while the
// group is closed, and a bad pointer can never corrupt the heap: free() validates the span, the
// class boundary and the allocation bit, and says why it refused. Not thread-safe (engine lock).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpk {

class MetaArena;

struct PageSource {
  // Returns `bytes` (a multiple of kSpanSize) of group memory aligned to kSpanSize, or nullptr.
  void *(*map)(void *ctx, size_t bytes);
  // Gives back memory obtained from map().
  void (*unmap)(void *ctx, void *p, size_t bytes);
  void *ctx;
};

class Heap {
 public:
  static constexpr size_t kSpanShift = 16;
  static constexpr size_t kSpanSize = size_t{1} << kSpanShift;
  static constexpr size_t kMaxSmall = 16384;
  static constexpr size_t kChunkSpans = 16;  // small spans are mapped 1 MiB at a time

  enum class FreeResult { kOk, kNotOurs, kNotABlock, kDoubleFree };

  Heap(MetaArena *arena, PageSource src) : arena_(arena), src_(src) {}
  void *alloc(size_t size);
  // A block aligned to `align` (a power of two): small blocks come from a class whose size is a
  // multiple of it (spans are kSpanSize-aligned), larger ones from spans of their own. nullptr
  // when align is over kSpanSize.
  void *alloc_aligned(size_t size, size_t align);
  FreeResult free(void *p);
  // The usable size of the live block at p (its class size, or its span's bytes); 0 if p is not
  // the start of a live block of this heap.
  size_t usable(const void *p) const;
  // Gives every span back to the page source and all metadata to the arena.
  void destroy();
  size_t live_blocks() const { return live_; }

  static int size_class(size_t size);  // index into class sizes, or -1 for large
  static size_t class_size(int cls);

 private:
  struct Span {
    uintptr_t base;
    size_t bytes;     // kSpanSize for small spans, the whole allocation for large ones
    int cls;          // -1: large
    uint32_t cap, nfree;
    bool large_live;
    Span *next_partial;
    Span *next_all;
    uint64_t bits[kSpanSize / 16 / 64];  // 1 = allocated
  };
  Span *new_span(int cls, uintptr_t base, size_t bytes);
  Span *lookup(uintptr_t addr) const;
  bool index_insert(Span *s);
  void index_erase(Span *s);
  bool refill_small_spans();
  void *alloc_large(size_t size);
  void *alloc_small(int cls);

  MetaArena *arena_;
  PageSource src_;
  static constexpr int kClasses = 8 + 4 * 7;  // 16..128 by 16, then 4 steps per doubling to 16 KiB
  Span *partial_[kClasses] = {};
  uintptr_t spare_base_ = 0;  // unused small spans from the last chunk
  size_t spare_spans_ = 0;
  Span *all_ = nullptr;
  // span index: base >> kSpanShift -> Span*, open addressing
  struct Entry { uintptr_t page; Span *span; };
  Entry *index_ = nullptr;
  uint32_t index_cap_ = 0, index_used_ = 0;
  size_t live_ = 0;
};

}  // namespace mpk

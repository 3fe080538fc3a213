#include "heap.h"

#include "meta_arena.h"

namespace mpk {

namespace {
constexpr uintptr_t kTombPage = ~uintptr_t{0};
uint32_t hash_page(uintptr_t page) { return static_cast<uint32_t>(page * 0x9E3779B97F4A7C15ull >> 32); }
}  // namespace

int Heap::size_class(size_t size) {
  if (size == 0) size = 1;
  if (size <= 128) return static_cast<int>((size + 15) / 16) - 1;
  if (size > kMaxSmall) return -1;
  for (int c = 8; c < kClasses; ++c)
    if (class_size(c) >= size) return c;
  return -1;
}

size_t Heap::class_size(int cls) {
  if (cls < 8) return size_t(cls + 1) * 16;
  int group = (cls - 8) / 4, step = (cls - 8) % 4;  // 128 * 2^group * (1 + (step+1)/4)
  size_t base = size_t{128} << group;
  return base + (base / 4) * size_t(step + 1);
}

Heap::Span *Heap::lookup(uintptr_t addr) const {
  if (!index_cap_) return nullptr;
  uintptr_t page = addr >> kSpanShift;
  for (uint32_t i = hash_page(page) & (index_cap_ - 1);; i = (i + 1) & (index_cap_ - 1)) {
    if (index_[i].page == page && index_[i].span) return index_[i].span;
    if (!index_[i].span && index_[i].page != kTombPage) return nullptr;
  }
}

bool Heap::index_insert(Span *s) {
  size_t pages = s->bytes >> kSpanShift;
  if ((index_used_ + pages) * 2 > index_cap_) {
    uint32_t cap = index_cap_ ? index_cap_ : 64;
    while ((index_used_ + pages) * 2 > cap) cap *= 2;
    auto *n = static_cast<Entry *>(arena_->alloc(cap * sizeof(Entry)));
    if (!n) return false;
    Entry *old = index_;
    uint32_t old_cap = index_cap_;
    index_ = n;
    index_cap_ = cap;
    index_used_ = 0;
    for (uint32_t i = 0; i < old_cap; ++i) {
      if (!old[i].span) continue;
      uint32_t j = hash_page(old[i].page) & (cap - 1);
      while (index_[j].span) j = (j + 1) & (cap - 1);
      index_[j] = old[i];
      ++index_used_;
    }
    if (old) arena_->free(old, old_cap * sizeof(Entry));
  }
  // Every 64 KiB page of a large span maps to it, so interior pointers are recognised and refused.
  for (size_t p = 0; p < pages; ++p) {
    uintptr_t page = (s->base >> kSpanShift) + p;
    uint32_t j = hash_page(page) & (index_cap_ - 1);
    while (index_[j].span) j = (j + 1) & (index_cap_ - 1);
    index_[j] = Entry{page, s};
    ++index_used_;
  }
  return true;
}

void Heap::index_erase(Span *s) {
  size_t pages = s->bytes >> kSpanShift;
  for (size_t p = 0; p < pages; ++p) {
    uintptr_t page = (s->base >> kSpanShift) + p;
    for (uint32_t i = hash_page(page) & (index_cap_ - 1);; i = (i + 1) & (index_cap_ - 1)) {
      if (index_[i].span == s && index_[i].page == page) {
        index_[i] = Entry{kTombPage, nullptr};
        break;
      }
      if (!index_[i].span && index_[i].page != kTombPage) break;
    }
  }
}

Heap::Span *Heap::new_span(int cls, uintptr_t base, size_t bytes) {
  auto *s = static_cast<Span *>(arena_->alloc(sizeof(Span)));
  if (!s) return nullptr;
  s->base = base;
  s->bytes = bytes;
  s->cls = cls;
  s->cap = cls >= 0 ? static_cast<uint32_t>(kSpanSize / class_size(cls)) : 1;
  s->nfree = s->cap;
  if (!index_insert(s)) {
    arena_->free(s, sizeof(Span));
    return nullptr;
  }
  s->next_all = all_;
  all_ = s;
  return s;
}

bool Heap::refill_small_spans() {
  void *p = src_.map(src_.ctx, kChunkSpans * kSpanSize);
  if (!p) return false;
  spare_base_ = reinterpret_cast<uintptr_t>(p);
  spare_spans_ = kChunkSpans;
  return true;
}

void *Heap::alloc_large(size_t size) {
  if (size > (size_t{1} << 46)) return nullptr;
  size_t bytes = (size + kSpanSize - 1) & ~(kSpanSize - 1);
  if (bytes == 0) bytes = kSpanSize;
  void *p = src_.map(src_.ctx, bytes);
  if (!p) return nullptr;
  Span *s = new_span(-1, reinterpret_cast<uintptr_t>(p), bytes);
  if (!s) {
    src_.unmap(src_.ctx, p, bytes);
    return nullptr;
  }
  s->large_live = true;
  s->nfree = 0;
  ++live_;
  return p;
}

void *Heap::alloc_small(int cls) {
  Span *s = partial_[cls];
  if (!s) {
    if (!spare_spans_ && !refill_small_spans()) return nullptr;
    s = new_span(cls, spare_base_, kSpanSize);
    if (!s) return nullptr;
    spare_base_ += kSpanSize;
    --spare_spans_;
    s->next_partial = nullptr;
    partial_[cls] = s;
  }
  uint32_t idx = 0;
  for (uint32_t w = 0; w * 64 < s->cap; ++w) {
    if (s->bits[w] == ~uint64_t{0}) continue;
    idx = w * 64 + static_cast<uint32_t>(__builtin_ctzll(~s->bits[w]));
    break;
  }
  s->bits[idx / 64] |= uint64_t{1} << (idx % 64);
  if (--s->nfree == 0) partial_[cls] = s->next_partial;  // full: off the partial list
  ++live_;
  return reinterpret_cast<void *>(s->base + idx * class_size(cls));
}

void *Heap::alloc(size_t size) {
  int cls = size_class(size);
  return cls < 0 ? alloc_large(size) : alloc_small(cls);
}

void *Heap::alloc_aligned(size_t size, size_t align) {
  if (align <= 16) return alloc(size);
  if (align > kSpanSize) return nullptr;
  // Blocks sit at span base + i * class size: a class whose size is a multiple of align gives
  // aligned blocks.
  for (int cls = size_class(size < align ? align : size); cls >= 0 && cls < kClasses; ++cls)
    if (class_size(cls) % align == 0) return alloc_small(cls);
  return alloc_large(size);
}

size_t Heap::usable(const void *p) const {
  auto a = reinterpret_cast<uintptr_t>(p);
  const Span *s = lookup(a);
  if (!s) return 0;
  if (s->cls < 0) return a == s->base && s->large_live ? s->bytes : 0;
  size_t sz = class_size(s->cls), off = a - s->base;
  if (off % sz || off / sz >= s->cap) return 0;
  uint32_t idx = static_cast<uint32_t>(off / sz);
  return (s->bits[idx / 64] >> (idx % 64)) & 1 ? sz : 0;
}

Heap::FreeResult Heap::free(void *p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  Span *s = lookup(a);
  if (!s) return FreeResult::kNotOurs;
  if (s->cls < 0) {
    if (a != s->base) return FreeResult::kNotABlock;
    if (!s->large_live) return FreeResult::kDoubleFree;
    index_erase(s);
    // unlink from all_
    for (Span **pp = &all_; *pp; pp = &(*pp)->next_all)
      if (*pp == s) {
        *pp = s->next_all;
        break;
      }
    src_.unmap(src_.ctx, p, s->bytes);
    arena_->free(s, sizeof(Span));
    --live_;
    return FreeResult::kOk;
  }
  size_t sz = class_size(s->cls), off = a - s->base;
  if (off % sz || off / sz >= s->cap) return FreeResult::kNotABlock;
  uint32_t idx = static_cast<uint32_t>(off / sz);
  uint64_t bit = uint64_t{1} << (idx % 64);
  if (!(s->bits[idx / 64] & bit)) return FreeResult::kDoubleFree;
  s->bits[idx / 64] &= ~bit;
  if (s->nfree++ == 0) {  // was full: back on the partial list
    s->next_partial = partial_[s->cls];
    partial_[s->cls] = s;
  }
  --live_;
  return FreeResult::kOk;
}

void Heap::destroy() {
  // Small spans share 1 MiB chunks; the engine unmaps the group's ranges wholesale, so only
  // metadata is released here, plus large spans that the page source tracks one by one.
  for (Span *s = all_; s;) {
    Span *next = s->next_all;
    arena_->free(s, sizeof(Span));
    s = next;
  }
  all_ = nullptr;
  if (index_) arena_->free(index_, index_cap_ * sizeof(Entry));
  index_ = nullptr;
  index_cap_ = index_used_ = 0;
  for (auto &p : partial_) p = nullptr;
  spare_spans_ = 0;
  live_ = 0;
}

}  // namespace mpk

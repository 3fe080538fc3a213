#include "meta_arena.h"

#include <sys/mman.h>

#include <cstring>

#include "key_backend.h"
#include "sys.h"

namespace mpk {

bool MetaArena::init(int pkey) {
  void *p = sys::mmap(nullptr, kReserve, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (sys::mmap_failed(p)) return false;
  if (pkey > 0 && key_mprotect(p, kReserve, PROT_READ | PROT_WRITE, pkey) != 0) {
    sys::munmap(p, kReserve);
    return false;
  }
  base_ = reinterpret_cast<uintptr_t>(p);
  // Fresh pages are zero: no free blocks; the first block starts after the header.
  hdr().bump = (sizeof(Header) + 63) & ~size_t{63};
  return true;
}

int MetaArena::class_of(size_t size) {
  int shift = kMinShift;
  while ((size_t{1} << shift) < size) ++shift;
  return shift;
}

void *MetaArena::alloc(size_t size) {
  if (size == 0) size = 1;
  int c = class_of(size);
  if (c > kMaxShift) return nullptr;
  size_t bytes = size_t{1} << c;
  Header &h = hdr();
  if (FreeBlock *b = h.free[c]) {
    h.free[c] = b->next;
    std::memset(b, 0, bytes);
    return b;
  }
  // Blocks are aligned to their size (up to a page), so page-sized and larger ones start on pages.
  size_t align = bytes < 4096 ? bytes : 4096;
  size_t at = (h.bump + align - 1) & ~(align - 1);
  if (at + bytes > kReserve) return nullptr;
  h.bump = at + bytes;
  return reinterpret_cast<void *>(base_ + at);  // fresh reservation pages are zero
}

void MetaArena::free(void *p, size_t size) {
  if (!p) return;
  int c = class_of(size == 0 ? 1 : size);
  if (c >= 16) {
    // Give large blocks' pages back to the kernel; they read as zero when reused.
    sys::raw(SYS_madvise, reinterpret_cast<long>(p), long(size_t{1} << c), MADV_DONTNEED);
  }
  auto *b = static_cast<FreeBlock *>(p);
  Header &h = hdr();
  b->next = h.free[c];
  h.free[c] = b;
}

}  // namespace mpk

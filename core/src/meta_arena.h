// meta_arena.h - memory for the engine's own state, outside every page group.
//
// One reserved mapping (raw mmap, MAP_NORESERVE) carved by a power-of-two free-list allocator.
// When pkeys are in use the whole mapping carries the metadata key, which the engine keeps
// write-disabled in every thread outside its own critical sections (see engine.h), so stray writes
// from the program cannot forge groups, keys or rights. Never calls malloc; callers serialize
// (the engine's lock); alloc() returns zeroed memory or nullptr when the reservation is exhausted.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpk {

class MetaArena {
 public:
  static constexpr size_t kReserve = size_t{1} << 30;  // address space only, populated on use
  static constexpr int kMinShift = 4;                   // 16-byte blocks
  static constexpr int kMaxShift = 30;

  // Reserves the mapping; tags it with pkey when pkey > 0. Returns false on failure.
  bool init(int pkey);
  void *alloc(size_t size);
  void free(void *p, size_t size);  // size as given to alloc()
  bool contains(const void *p) const {
    auto a = reinterpret_cast<uintptr_t>(p);
    return a >= base_ && a < base_ + kReserve;
  }
  uintptr_t base() const { return base_; }

 private:
  struct FreeBlock { FreeBlock *next; };
  // The allocator's own state lives in the arena's first bytes, under the metadata key like
  // everything it hands out: the object itself holds only the base (roots.h keeps it read-only).
  struct Header {
    size_t bump;
    FreeBlock *free[kMaxShift + 1];
  };
  Header &hdr() const { return *reinterpret_cast<Header *>(base_); }
  static int class_of(size_t size);
  uintptr_t base_ = 0;
};

}  // namespace mpk

// area.h - the address-space reservation every program lives in.
//
// One PROT_NONE mapping of kAreaPages pages at a fixed address, taken with MAP_FIXED_NOREPLACE.
// A program starts by unmapping it (so its holes are real holes: mprotect over them fails with
// ENOMEM, loads fault with SEGV_MAPERR), creates its regions with MAP_FIXED inside it, and ends by
// unmapping all of it and reserving it again. Because the address is fixed, MAP_FIXED and
// MREMAP_FIXED targets are the same in every process and can never clobber anything else.
// Nothing else lands in the holes meanwhile: the kernel places unhinted mappings top-down below
// the mmap base, far above this address.
#pragma once

#include <cstdint>
#include <string>

namespace mpkdiff {

class Area {
 public:
  static constexpr uintptr_t kBase = 0x2f0000000000ull;

  // Each returns false with errno set on failure.
  static bool reserve();
  static bool release();

  static char *at(uint64_t offset) { return reinterpret_cast<char *>(kBase + offset); }
  static bool contains(uintptr_t addr);
  // The VMAs inside the reservation, one per line, from /proc/self/smaps: pages, permissions,
  // protection key and anonymous kB (`--maps`, for reading why two runs differ).
  static std::string maps();
};

}  // namespace mpkdiff

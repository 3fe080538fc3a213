// area.cc - taking and giving back the reservation.
#include "area.h"

#include <sys/mman.h>

#include <cerrno>

#include "program.h"

namespace mpkdiff {

bool Area::reserve() {
  void *p = mmap(reinterpret_cast<void *>(kBase), kAreaPages * kPage, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (p == MAP_FAILED) return false;
  if (p != reinterpret_cast<void *>(kBase)) {  // a kernel older than 4.17 treats the flag as a hint
    munmap(p, kAreaPages * kPage);
    errno = EEXIST;
    return false;
  }
  return true;
}

bool Area::release() { return munmap(reinterpret_cast<void *>(kBase), kAreaPages * kPage) == 0; }

bool Area::contains(uintptr_t addr) { return addr >= kBase && addr < kBase + kAreaPages * kPage; }

}  // namespace mpkdiff

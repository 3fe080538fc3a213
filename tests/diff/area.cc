// area.cc - taking and giving back the reservation.
#include "area.h"

#include <sys/mman.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

std::string Area::maps() {
  std::string out;
  FILE *f = std::fopen("/proc/self/smaps", "r");
  if (!f) return "    maps: cannot open /proc/self/smaps\n";
  char line[512];
  bool inside = false;
  char entry[160] = "";
  auto flush = [&]() {
    if (inside) out += entry, out += '\n';
    inside = false;
  };
  while (std::fgets(line, sizeof line, f)) {
    uintptr_t lo, hi;
    char perms[8];
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi, perms) == 3 && std::strchr(line, ' ')) {
      flush();
      if (!contains(lo)) continue;
      inside = true;
      std::snprintf(entry, sizeof entry, "    vma p%" PRIuPTR "-p%" PRIuPTR " %s", (lo - kBase) / kPage, (hi - kBase) / kPage,
                    perms);
      continue;
    }
    if (!inside) continue;
    unsigned long v;
    size_t n = std::strlen(entry);
    if (std::sscanf(line, "Anonymous: %lu kB", &v) == 1) std::snprintf(entry + n, sizeof entry - n, " anon=%luk", v);
    else if (std::sscanf(line, "ProtectionKey: %lu", &v) == 1) std::snprintf(entry + n, sizeof entry - n, " key=%lu", v);
  }
  flush();
  std::fclose(f);
  return out;
}

}  // namespace mpkdiff

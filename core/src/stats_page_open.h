// stats_page_open.h - finding a running process's statistics page (stats_page.h) from outside the
// shim: mpk-stat, the test suites, the benchmarks.
//
// /dev/shm/libmpk-<pid>.stats may be a file left by an earlier process that had the same pid and
// ended without its destructor (killed, or `_exit` in a forked child). A page counts as the
// process's own only while that process maps it, which /proc/<pid>/maps shows.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "stats_page.h"

namespace mpk {

// True when process `pid` maps `path` (shared, as the shim does).
inline bool process_maps_file(long pid, const char *path) {
  char maps[64];
  std::snprintf(maps, sizeof maps, "/proc/%ld/maps", pid);
  FILE *f = std::fopen(maps, "re");
  if (!f) return false;
  char line[512];
  size_t plen = std::strlen(path);
  bool found = false;
  while (!found && std::fgets(line, sizeof line, f)) {
    size_t n = std::strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == ' ')) line[--n] = '\0';
    found = n >= plen && std::strcmp(line + n - plen, path) == 0 && (n == plen || line[n - plen - 1] == ' ');
  }
  std::fclose(f);
  return found;
}

// The live statistics page of process `pid`, mapped read-only, or nullptr with the reason in `why`.
inline const StatsPage *open_stats_page(long pid, char *why, size_t why_cap) {
  char path[64];
  std::snprintf(path, sizeof path, "/dev/shm/libmpk-%ld.stats", pid);
  if (!process_maps_file(pid, path)) {
    std::snprintf(why, why_cap, "process %ld maps no %s: it does not run libmpk_shim.so with protection keys",
                  pid, path);
    return nullptr;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::snprintf(why, why_cap, "%s: %s", path, std::strerror(errno));
    return nullptr;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || static_cast<size_t>(sb.st_size) < sizeof(StatsPage)) {
    close(fd);
    std::snprintf(why, why_cap, "%s is not a statistics page of this version", path);
    return nullptr;
  }
  void *p = mmap(nullptr, sizeof(StatsPage), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    std::snprintf(why, why_cap, "cannot map %s: %s", path, std::strerror(errno));
    return nullptr;
  }
  const auto *page = static_cast<const StatsPage *>(p);
  if (page->magic != kStatsMagic || page->layout != kStatsLayout || page->pid != pid) {
    munmap(p, sizeof(StatsPage));
    std::snprintf(why, why_cap, "%s was written by another version of the shim or another process", path);
    return nullptr;
  }
  return page;
}

// This process's own live page, looked up once; nullptr when no shim with keys runs here.
inline const StatsPage *own_stats_page() {
  static const StatsPage *page = [] {
    char why[256];
    return open_stats_page(getpid(), why, sizeof why);
  }();
  return page;
}

}  // namespace mpk

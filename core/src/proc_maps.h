// proc_maps.h - reading /proc/self/maps and /proc/self/smaps without allocating.
//
// for_each_line() hands each line (NUL-terminated, without its newline) to a callback until it
// returns false; lines longer than the buffer are skipped. parse_mapping() splits a mapping's
// header line ("lo-hi perms offset dev inode   path").
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>

#include "sys.h"

namespace mpk {

struct MappingLine {
  uintptr_t lo = 0, hi = 0;
  const char *perms = "";  // "rw-p", "r-xs", ...
  uint64_t offset = 0;     // the file offset (0 for anonymous memory)
  uint64_t dev = 0;        // major << 32 | minor
  uint64_t inode = 0;
  const char *path = "";   // "" for anonymous memory; "[heap]", "/dev/zero (deleted)", ...
};

// False if the line is not a mapping header (smaps attribute lines are not).
bool parse_mapping(char *line, MappingLine *out);

// If line is an smaps "ProtectionKey:" line, stores the key and returns true.
bool parse_smaps_pkey(const char *line, int *pkey);

// PROT_* of a mapping's permissions ("r-xp" -> PROT_READ|PROT_EXEC).
inline int prot_of_perms(const char *perms) {
  return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) | (perms[2] == 'x' ? PROT_EXEC : 0);
}
// MAP_SHARED or MAP_PRIVATE, with MAP_ANONYMOUS when no file backs it, as far as the line says.
inline int map_flags_of(const MappingLine &m) {
  return (m.perms[3] == 's' ? MAP_SHARED : MAP_PRIVATE) | (m.path[0] != '/' ? MAP_ANONYMOUS : 0);
}

template <typename F>
bool for_each_line(const char *file, F &&on_line) {
  int fd = sys::open(file, 0 /*O_RDONLY*/ | 02000000 /*O_CLOEXEC*/);
  if (fd < 0) return false;
  char buf[8192];
  size_t have = 0;
  bool more = true;
  while (more) {
    long n = sys::read(fd, buf + have, sizeof buf - 1 - have);
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    buf[have] = '\0';
    char *line = buf;
    for (char *nl; more && (nl = __builtin_strchr(line, '\n')); line = nl + 1) {
      *nl = '\0';
      more = on_line(line);
    }
    size_t rest = have - static_cast<size_t>(line - buf);
    __builtin_memmove(buf, line, rest);
    have = rest == sizeof buf - 1 ? 0 : rest;  // a line longer than the buffer: dropped
  }
  sys::close(fd);
  return true;
}

}  // namespace mpk

// proc_maps.h - reading /proc/self/maps and /proc/self/smaps without allocating.
//
// for_each_line() hands each line (NUL-terminated, without its newline) to a callback until it
// returns false; lines longer than the buffer are skipped. parse_mapping() splits a mapping's
// header line ("lo-hi perms offset dev inode   path"). for_each_smaps_vma() hands over whole
// smaps entries: a header with the attribute lines the engine reads.
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

// One entry of /proc/self/smaps: its header and the attribute lines the engine reads.
struct SmapsVma {
  uintptr_t lo = 0, hi = 0;
  char perms[4] = {};
  uint64_t offset = 0, dev = 0, inode = 0;
  bool anon_private = false;  // private memory no file backs and the kernel gives no name
  bool file_private = false;  // a private mapping of a file by path
  int pkey = 0;               // ProtectionKey (0 where the kernel has no keys)
  char flags[96] = {};        // VmFlags, as printed (truncated to fit)
};

// Hands each entry of /proc/self/smaps that overlaps [start, end), in address order and complete,
// to on_vma(const SmapsVma &) until it returns false. False if the file cannot be read.
template <typename F>
bool for_each_smaps_vma(uintptr_t start, uintptr_t end, F &&on_vma) {
  SmapsVma cur;
  bool open = false, more = true;
  // An entry is complete at the next header or at the end of the file.
  auto deliver = [&] {
    if (open) more = on_vma(static_cast<const SmapsVma &>(cur));
    open = false;
  };
  bool ok = for_each_line("/proc/self/smaps", [&](char *line) {
    MappingLine m;
    if (parse_mapping(line, &m)) {
      deliver();
      if (!more || m.lo >= end) return more = false;
      if (m.hi <= start) return true;
      cur = SmapsVma{};
      cur.lo = m.lo;
      cur.hi = m.hi;
      __builtin_memcpy(cur.perms, m.perms, sizeof cur.perms);
      cur.offset = m.offset;
      cur.dev = m.dev;
      cur.inode = m.inode;
      cur.anon_private = m.perms[3] == 'p' && m.inode == 0 && m.path[0] == '\0';
      cur.file_private = m.perms[3] == 'p' && m.inode != 0 && m.path[0] == '/';
      open = true;
      return true;
    }
    if (!open || parse_smaps_pkey(line, &cur.pkey)) return true;
    if (__builtin_strncmp(line, "VmFlags:", 8) == 0) {
      size_t len = __builtin_strlen(line + 8);
      if (len >= sizeof cur.flags) len = sizeof cur.flags - 1;
      __builtin_memcpy(cur.flags, line + 8, len);
      cur.flags[len] = '\0';
    }
    return true;
  });
  if (more) deliver();
  return ok;
}

}  // namespace mpk

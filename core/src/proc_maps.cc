#include "proc_maps.h"

namespace mpk {

namespace {

bool hex_until(char *&p, char stop, uintptr_t *out) {
  uintptr_t v = 0;
  const char *start = p;
  for (; *p && *p != stop; ++p) {
    char c = *p;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v * 16 + static_cast<uintptr_t>(d);
  }
  *out = v;
  return *p == stop && p != start;
}

}  // namespace

bool parse_mapping(char *line, MappingLine *out) {
  char *p = line;
  if (!hex_until(p, '-', &out->lo)) return false;
  ++p;
  if (!hex_until(p, ' ', &out->hi)) return false;
  out->perms = ++p;
  const char *q = p;
  for (int field = 0; field < 4 && *q; ++field) {  // perms offset dev inode, then the path
    while (*q && *q != ' ') ++q;
    while (*q == ' ') ++q;
  }
  out->path = q;
  return true;
}

}  // namespace mpk

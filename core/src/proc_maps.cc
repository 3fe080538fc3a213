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

bool parse_smaps_pkey(const char *line, int *pkey) {
  static constexpr char kTag[] = "ProtectionKey:";
  for (size_t i = 0; i + 1 < sizeof kTag; ++i)
    if (line[i] != kTag[i]) return false;
  int v = 0;
  for (const char *d = line + sizeof kTag - 1; *d; ++d)
    if (*d >= '0' && *d <= '9') v = v * 10 + (*d - '0');
  *pkey = v;
  return true;
}

bool parse_mapping(char *line, MappingLine *out) {
  char *p = line;
  if (!hex_until(p, '-', &out->lo)) return false;
  ++p;
  if (!hex_until(p, ' ', &out->hi)) return false;
  out->perms = ++p;
  char *q = p;
  out->offset = out->dev = out->inode = 0;
  for (int field = 0; field < 4 && *q; ++field) {  // perms offset dev inode, then the path
    while (*q && *q != ' ') ++q;
    while (*q == ' ') ++q;
    if (field == 0) {
      uintptr_t v = 0;
      char *o = q;
      if (hex_until(o, ' ', &v)) out->offset = v;
    } else if (field == 1) {
      uintptr_t major = 0, minor = 0;
      char *o = q;
      if (hex_until(o, ':', &major) && (++o, hex_until(o, ' ', &minor))) out->dev = uint64_t{major} << 32 | minor;
    } else if (field == 2) {
      for (const char *d = q; *d >= '0' && *d <= '9'; ++d) out->inode = out->inode * 10 + static_cast<uint64_t>(*d - '0');
    }
  }
  out->path = q;
  return true;
}

}  // namespace mpk

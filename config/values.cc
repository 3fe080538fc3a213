// values.cc - text forms of sizes, permissions, signals and addresses.
#include "values.h"

#include <sys/mman.h>

#include <csignal>
#include <cstring>

namespace mpk::cfg {
namespace {

// Decimal digits from *p; advances *p. False when there are none or the value overflows.
bool read_decimal(const char **p, uint64_t *out) {
  const char *s = *p;
  if (*s < '0' || *s > '9') return false;
  uint64_t v = 0;
  for (; *s >= '0' && *s <= '9'; ++s) {
    uint64_t d = static_cast<uint64_t>(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *p = s;
  *out = v;
  return true;
}

}  // namespace

bool parse_size_text(const char *text, uint64_t *out) {
  const char *p = text;
  uint64_t v;
  if (!read_decimal(&p, &v)) return false;
  int shift = 0;
  switch (*p) {
    case 0: break;
    case 'k': case 'K': shift = 10; ++p; break;
    case 'm': case 'M': shift = 20; ++p; break;
    case 'g': case 'G': shift = 30; ++p; break;
    case 't': case 'T': shift = 40; ++p; break;
    default: return false;
  }
  if (*p) return false;
  if (shift && v > (UINT64_MAX >> shift)) return false;
  *out = v << shift;
  return true;
}

bool parse_prot_text(const char *text, int *out) {
  if (strcmp(text, "none") == 0) {
    *out = PROT_NONE;
    return true;
  }
  if (!*text) return false;
  int prot = 0;
  for (const char *p = text; *p; ++p) {
    int bit = *p == 'r' ? PROT_READ : *p == 'w' ? PROT_WRITE : *p == 'x' ? PROT_EXEC : 0;
    if (!bit || (prot & bit)) return false;
    prot |= bit;
  }
  *out = prot;
  return true;
}

bool parse_signal_text(const char *text, int *out) {
  const char *p = text;
  if (strncmp(p, "SIG", 3) == 0) p += 3;
  int base;
  if (strncmp(p, "RTMIN", 5) == 0) base = SIGRTMIN;
  else if (strncmp(p, "RTMAX", 5) == 0) base = SIGRTMAX;
  else return false;
  p += 5;
  if (!*p) {
    *out = base;
    return true;
  }
  char sign = *p++;
  if (sign != '+' && sign != '-') return false;
  uint64_t n;
  if (!read_decimal(&p, &n) || *p || n > 1000) return false;
  *out = sign == '+' ? base + static_cast<int>(n) : base - static_cast<int>(n);
  return true;
}

bool parse_address_text(const char *text, uint64_t *out) {
  const char *p = text;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    p += 2;
    if (!*p) return false;
    uint64_t v = 0;
    for (; *p; ++p) {
      int d;
      if (*p >= '0' && *p <= '9') d = *p - '0';
      else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
      else if (*p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
      else if (*p == '_') continue;  // digit separators, as TOML allows in integers
      else return false;
      if (v >> 60) return false;
      v = v << 4 | static_cast<uint64_t>(d);
    }
    *out = v;
    return true;
  }
  uint64_t v;
  if (!read_decimal(&p, &v) || *p) return false;
  *out = v;
  return true;
}

}  // namespace mpk::cfg

#include "next_symbol.h"

#include <elf.h>
#include <link.h>

#include <cstdint>
#include <cstring>

extern "C" const ElfW(Ehdr) __ehdr_start;  // the shim's own ELF header (its load address)

namespace mpk::shim {

namespace {

struct Tables {
  const ElfW(Sym) *symtab = nullptr;
  const char *strtab = nullptr;
  const ElfW(Half) *versym = nullptr;
  const uint32_t *gnu_hash = nullptr;
  const uint32_t *sysv_hash = nullptr;
};

// Dynamic-section addresses are already relocated by the dynamic linker for most objects; a few
// (the vDSO) keep them relative to the load base.
template <typename T>
const T *at(const link_map *m, ElfW(Addr) v) {
  uintptr_t a = v < m->l_addr ? m->l_addr + v : v;
  return reinterpret_cast<const T *>(a);
}

bool read_tables(const link_map *m, Tables *t) {
  if (!m->l_ld) return false;
  for (const ElfW(Dyn) *d = m->l_ld; d->d_tag != DT_NULL; ++d) {
    switch (d->d_tag) {
      case DT_SYMTAB: t->symtab = at<ElfW(Sym)>(m, d->d_un.d_ptr); break;
      case DT_STRTAB: t->strtab = at<char>(m, d->d_un.d_ptr); break;
      case DT_VERSYM: t->versym = at<ElfW(Half)>(m, d->d_un.d_ptr); break;
      case DT_GNU_HASH: t->gnu_hash = at<uint32_t>(m, d->d_un.d_ptr); break;
      case DT_HASH: t->sysv_hash = at<uint32_t>(m, d->d_un.d_ptr); break;
      default: break;
    }
  }
  return t->symtab && t->strtab && (t->gnu_hash || t->sysv_hash);
}

// A definition the dynamic linker would bind an unversioned reference to.
void *usable(const link_map *m, const Tables &t, uint32_t i, const char *name) {
  const ElfW(Sym) &s = t.symtab[i];
  if (s.st_shndx == SHN_UNDEF || std::strcmp(t.strtab + s.st_name, name) != 0) return nullptr;
  int type = ELF64_ST_TYPE(s.st_info), bind = ELF64_ST_BIND(s.st_info);
  if (type != STT_FUNC || (bind != STB_GLOBAL && bind != STB_WEAK)) return nullptr;
  if (t.versym && (t.versym[i] & 0x8000)) return nullptr;  // a hidden (non-default) version
  return reinterpret_cast<void *>(m->l_addr + s.st_value);
}

uint32_t gnu_hash(const char *s) {
  uint32_t h = 5381;
  for (; *s; ++s) h = h * 33 + static_cast<unsigned char>(*s);
  return h;
}

uint32_t sysv_hash(const char *s) {
  uint32_t h = 0;
  for (; *s; ++s) {
    h = (h << 4) + static_cast<unsigned char>(*s);
    uint32_t g = h & 0xf0000000u;
    if (g) h ^= g >> 24;
    h &= ~g;
  }
  return h;
}

void *lookup(const link_map *m, const char *name) {
  Tables t;
  if (!read_tables(m, &t)) return nullptr;
  if (t.gnu_hash) {
    const uint32_t nbuckets = t.gnu_hash[0], symoffset = t.gnu_hash[1], bloom_size = t.gnu_hash[2],
                   shift = t.gnu_hash[3];
    const auto *bloom = reinterpret_cast<const ElfW(Addr) *>(t.gnu_hash + 4);
    const uint32_t *buckets = reinterpret_cast<const uint32_t *>(bloom + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    if (!nbuckets || !bloom_size) return nullptr;
    uint32_t h = gnu_hash(name);
    constexpr uint32_t kBits = sizeof(ElfW(Addr)) * 8;
    ElfW(Addr) word = bloom[(h / kBits) % bloom_size];
    ElfW(Addr) mask = (ElfW(Addr){1} << (h % kBits)) | (ElfW(Addr){1} << ((h >> shift) % kBits));
    if ((word & mask) != mask) return nullptr;
    uint32_t i = buckets[h % nbuckets];
    if (i < symoffset) return nullptr;
    for (;; ++i) {
      uint32_t ch = chain[i - symoffset];
      if ((ch | 1) == (h | 1))
        if (void *p = usable(m, t, i, name)) return p;
      if (ch & 1) return nullptr;
    }
  }
  const uint32_t nbucket = t.sysv_hash[0];
  const uint32_t *bucket = t.sysv_hash + 2, *chain = bucket + nbucket;
  for (uint32_t i = bucket[sysv_hash(name) % nbucket]; i != STN_UNDEF; i = chain[i])
    if (void *p = usable(m, t, i, name)) return p;
  return nullptr;
}

}  // namespace

void *global_symbol(const char *name) {
  for (const link_map *m = _r_debug.r_map; m; m = m->l_next)
    if (void *p = lookup(m, name)) return p;
  return nullptr;
}

void *next_symbol(const char *name) {
  const auto self = reinterpret_cast<ElfW(Addr)>(&__ehdr_start);
  bool after = false;
  for (const link_map *m = _r_debug.r_map; m; m = m->l_next) {
    if (!after) {
      after = m->l_addr == self;
      continue;
    }
    if (void *p = lookup(m, name)) return p;
  }
  return nullptr;
}

}  // namespace mpk::shim

#include "gates.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>

#include <cstring>

#include "gates_table.h"
#include "raw_log.h"
#include "sys.h"

extern "C" char mpk_gate_stubs[];
extern "C" const ElfW(Ehdr) __ehdr_start;

namespace mpk::shim {

namespace {

constexpr size_t kStubBytes = 16;  // gate_stubs.S: .p2align 4 per stub

struct alignas(4096) Table {
  int count = 0;
  GateTarget targets[kMaxGateStubs];
  uint16_t gate_of[kMaxGateStubs] = {};  // which policy gate made it (for the start-up report)
};
constinit Table g_table;
constinit const cfg::Policy *g_policy = nullptr;
constinit pthread_mutex_t g_install_lock = PTHREAD_MUTEX_INITIALIZER;
char g_exe_name[256];

const char *basename_of(const char *path) {
  const char *slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

// A loaded module's dynamic tables (addresses already relocated by the dynamic linker, except in
// the vDSO: see next_symbol.cc).
struct Module {
  const char *name = "";
  uintptr_t base = 0;
  const ElfW(Phdr) *phdr = nullptr;
  int phnum = 0;
  const ElfW(Sym) *symtab = nullptr;
  const char *strtab = nullptr;
  const ElfW(Half) *versym = nullptr;
  const uint32_t *gnu_hash = nullptr;
  const uint32_t *sysv_hash = nullptr;
  const ElfW(Rela) *jmprel = nullptr;
  size_t jmprel_bytes = 0;
  const ElfW(Rela) *rela = nullptr;
  size_t rela_bytes = 0;
  uintptr_t relro_lo = 0, relro_hi = 0;
  uintptr_t lo = UINTPTR_MAX, hi = 0;  // its loaded extent
};

template <typename T>
const T *at(uintptr_t base, ElfW(Addr) v) {
  return reinterpret_cast<const T *>(v < base ? base + v : v);
}

bool read_module(const dl_phdr_info *info, Module *m) {
  m->base = info->dlpi_addr;
  m->phdr = info->dlpi_phdr;
  m->phnum = info->dlpi_phnum;
  m->name = info->dlpi_name && info->dlpi_name[0] ? basename_of(info->dlpi_name) : g_exe_name;
  const ElfW(Dyn) *dyn = nullptr;
  for (int i = 0; i < m->phnum; ++i) {
    const ElfW(Phdr) &ph = m->phdr[i];
    if (ph.p_type == PT_DYNAMIC) dyn = reinterpret_cast<const ElfW(Dyn) *>(m->base + ph.p_vaddr);
    if (ph.p_type == PT_GNU_RELRO) {
      m->relro_lo = m->base + ph.p_vaddr;
      m->relro_hi = m->relro_lo + ph.p_memsz;
    }
    if (ph.p_type == PT_LOAD) {
      uintptr_t lo = m->base + ph.p_vaddr, hi = lo + ph.p_memsz;
      if (lo < m->lo) m->lo = lo;
      if (hi > m->hi) m->hi = hi;
    }
  }
  if (!dyn) return false;
  for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; ++d) {
    switch (d->d_tag) {
      case DT_SYMTAB: m->symtab = at<ElfW(Sym)>(m->base, d->d_un.d_ptr); break;
      case DT_STRTAB: m->strtab = at<char>(m->base, d->d_un.d_ptr); break;
      case DT_VERSYM: m->versym = at<ElfW(Half)>(m->base, d->d_un.d_ptr); break;
      case DT_GNU_HASH: m->gnu_hash = at<uint32_t>(m->base, d->d_un.d_ptr); break;
      case DT_HASH: m->sysv_hash = at<uint32_t>(m->base, d->d_un.d_ptr); break;
      case DT_JMPREL: m->jmprel = at<ElfW(Rela)>(m->base, d->d_un.d_ptr); break;
      case DT_PLTRELSZ: m->jmprel_bytes = d->d_un.d_val; break;
      case DT_RELA: m->rela = at<ElfW(Rela)>(m->base, d->d_un.d_ptr); break;
      case DT_RELASZ: m->rela_bytes = d->d_un.d_val; break;
      default: break;
    }
  }
  return m->symtab && m->strtab;
}

// The number of dynamic symbols: DT_HASH says it; with DT_GNU_HASH alone, the end of the last
// hash chain does.
uint32_t symbol_count(const Module &m) {
  if (m.sysv_hash) return m.sysv_hash[1];
  if (!m.gnu_hash) return 0;
  const uint32_t nbuckets = m.gnu_hash[0], symoffset = m.gnu_hash[1], bloom_size = m.gnu_hash[2];
  const auto *buckets = reinterpret_cast<const uint32_t *>(reinterpret_cast<const ElfW(Addr) *>(m.gnu_hash + 4) + bloom_size);
  const uint32_t *chain = buckets + nbuckets;
  uint32_t last = 0;
  for (uint32_t b = 0; b < nbuckets; ++b)
    if (buckets[b] > last) last = buckets[b];
  if (last < symoffset) return symoffset;
  while (!(chain[last - symoffset] & 1)) ++last;
  return last + 1;
}

bool defined_function(const Module &m, uint32_t i) {
  const ElfW(Sym) &s = m.symtab[i];
  int type = ELF64_ST_TYPE(s.st_info), bind = ELF64_ST_BIND(s.st_info);
  return s.st_shndx != SHN_UNDEF && type == STT_FUNC && (bind == STB_GLOBAL || bind == STB_WEAK) &&
         !(m.versym && (m.versym[i] & 0x8000));
}

int stub_of(void *target) {
  for (int i = 0; i < g_table.count; ++i)
    if (g_table.targets[i].target == target) return i;
  return -1;
}

bool is_stub(uintptr_t v) {
  auto lo = reinterpret_cast<uintptr_t>(mpk_gate_stubs);
  return v >= lo && v < lo + kMaxGateStubs * kStubBytes;
}

// Pass 1: the gated functions of every module a gate names get stubs.
int collect_targets(dl_phdr_info *info, size_t, void *) {
  Module m;
  if (!read_module(info, &m) || m.base == reinterpret_cast<uintptr_t>(&__ehdr_start)) return 0;
  for (int gi = 0; gi < g_policy->gate_count; ++gi) {
    const cfg::Gate &g = g_policy->gates[gi];
    if (!cfg::glob_match(g.module, m.name, false)) continue;
    uint32_t n = symbol_count(m);
    for (uint32_t i = 1; i < n; ++i) {
      if (!defined_function(m, i)) continue;
      const char *name = m.strtab + m.symtab[i].st_name;
      bool named = false;
      for (int k = 0; k < g.symbol_count && !named; ++k) named = cfg::glob_match(g.symbols[k], name, false);
      if (!named) continue;
      void *target = reinterpret_cast<void *>(m.base + m.symtab[i].st_value);
      if (stub_of(target) >= 0) continue;
      if (g_table.count == kMaxGateStubs) {
        MPK_LOG(kError, "gates: more than %d gated functions; %s in %s is NOT gated", kMaxGateStubs, name, m.name);
        return 0;
      }
      g_table.targets[g_table.count] = GateTarget{target, static_cast<int16_t>(g.region)};
      g_table.gate_of[g_table.count] = static_cast<uint16_t>(gi);
      ++g_table.count;
    }
  }
  return 0;
}

// The module whose loaded extent holds addr (pass 2 needs to know a target's own module).
struct Owner {
  uintptr_t addr;
  uintptr_t lo, hi;
};
int find_owner(dl_phdr_info *info, size_t, void *arg) {
  auto *o = static_cast<Owner *>(arg);
  Module m;
  m.base = info->dlpi_addr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr) &ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    uintptr_t lo = m.base + ph.p_vaddr, hi = lo + ph.p_memsz;
    if (o->addr >= lo && o->addr < hi) {
      o->lo = lo;
      o->hi = hi;
      return 1;
    }
  }
  return 0;
}

// The first definition of `name` in load order (how the dynamic linker binds a symbol in the
// global scope).
struct FirstDef {
  const char *name;
  void *addr = nullptr;
};
int find_first_def(dl_phdr_info *info, size_t, void *arg) {
  auto *f = static_cast<FirstDef *>(arg);
  Module m;
  if (!read_module(info, &m)) return 0;
  uint32_t n = symbol_count(m);
  for (uint32_t i = 1; i < n; ++i) {
    if (!defined_function(m, i) || std::strcmp(m.strtab + m.symtab[i].st_name, f->name) != 0) continue;
    f->addr = reinterpret_cast<void *>(m.base + m.symtab[i].st_value);
    return 1;
  }
  return 0;
}

void write_slot(const Module &m, uintptr_t *slot, uintptr_t value) {
  auto a = reinterpret_cast<uintptr_t>(slot);
  uintptr_t page = a & ~uintptr_t{4095};
  bool relro = a >= m.relro_lo && a < m.relro_hi;
  // Ordering: the slot is written with one aligned store, so a concurrent call through it takes
  // either the function or its stub, both valid.
  if (relro) sys::mprotect(reinterpret_cast<void *>(page), 4096, PROT_READ | PROT_WRITE);
  __atomic_store_n(slot, value, __ATOMIC_RELEASE);
  if (relro) sys::mprotect(reinterpret_cast<void *>(page), 4096, PROT_READ);
}

struct PatchCount {
  int slots = 0;
};

void patch_relocs(const Module &m, const ElfW(Rela) *r, size_t bytes, PatchCount *pc) {
  for (size_t i = 0; i < bytes / sizeof(ElfW(Rela)); ++i) {
    uint32_t type = ELF64_R_TYPE(r[i].r_info), sym = ELF64_R_SYM(r[i].r_info);
    if ((type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT) || !sym) continue;
    auto *slot = reinterpret_cast<uintptr_t *>(m.base + r[i].r_offset);
    uintptr_t v = *slot;
    if (is_stub(v)) continue;  // done already
    int stub = stub_of(reinterpret_cast<void *>(v));
    if (stub < 0 && v >= m.lo && v < m.hi && type == R_X86_64_JUMP_SLOT) {
      // Lazily bound and not called yet: the slot points into this module's PLT. Bind it now to
      // what the dynamic linker would, if that is a gated function.
      FirstDef f{m.strtab + m.symtab[sym].st_name};
      dl_iterate_phdr(find_first_def, &f);
      if (f.addr) stub = stub_of(f.addr);
    }
    if (stub < 0) continue;
    // Calls inside the defining module are not gated.
    Owner o{reinterpret_cast<uintptr_t>(g_table.targets[stub].target), 0, 0};
    dl_iterate_phdr(find_owner, &o);
    if (o.lo >= m.lo && o.hi <= m.hi) continue;
    write_slot(m, slot, reinterpret_cast<uintptr_t>(mpk_gate_stubs) + static_cast<uintptr_t>(stub) * kStubBytes);
    ++pc->slots;
  }
}

// Pass 2: every module's slots that bind to a gated function of another module.
int patch_module(dl_phdr_info *info, size_t, void *arg) {
  Module m;
  if (!read_module(info, &m) || m.base == reinterpret_cast<uintptr_t>(&__ehdr_start)) return 0;
  auto *pc = static_cast<PatchCount *>(arg);
  if (m.jmprel) patch_relocs(m, m.jmprel, m.jmprel_bytes, pc);
  if (m.rela) patch_relocs(m, m.rela, m.rela_bytes, pc);
  return 0;
}

int install_locked() {
  sys::mprotect(&g_table, sizeof g_table, PROT_READ | PROT_WRITE);
  dl_iterate_phdr(collect_targets, nullptr);
  PatchCount pc;
  dl_iterate_phdr(patch_module, &pc);
  sys::mprotect(&g_table, sizeof g_table, PROT_READ);
  return pc.slots;
}

void read_exe_name() {
  char buf[4096];
  long n = sys::raw(SYS_readlinkat, AT_FDCWD, (long)"/proc/self/exe", (long)buf, sizeof buf - 1);
  if (n <= 0) return;
  buf[n] = '\0';
  const char *b = basename_of(buf);
  size_t len = std::strlen(b);
  if (len >= sizeof g_exe_name) len = sizeof g_exe_name - 1;
  std::memcpy(g_exe_name, b, len);
  g_exe_name[len] = '\0';
}

}  // namespace

const GateTarget &gate_target(unsigned index) { return g_table.targets[index]; }

void gates_install(const cfg::Policy &policy) {
  if (!policy.gate_count) return;
  read_exe_name();
  pthread_mutex_lock(&g_install_lock);
  g_policy = &policy;
  int slots = install_locked();
  int count = g_table.count;
  pthread_mutex_unlock(&g_install_lock);
  MPK_LOG(kInfo, "gates: %d function%s gated through %d slot%s", count, count == 1 ? "" : "s", slots,
          slots == 1 ? "" : "s");
  for (int gi = 0; gi < policy.gate_count; ++gi) {
    bool any = false;
    for (int i = 0; i < count && !any; ++i) any = g_table.gate_of[i] == gi;
    if (!any)
      MPK_LOG(kWarn, "gate on line %u (module %s): no loaded module defines any of its functions yet",
              policy.gates[gi].line, policy.gates[gi].module);
  }
}

void gates_refresh() {
  if (!g_policy) return;
  pthread_mutex_lock(&g_install_lock);
  install_locked();
  pthread_mutex_unlock(&g_install_lock);
}

}  // namespace mpk::shim

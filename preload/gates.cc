#include "gates.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>

#include <cstring>

#include "gates_table.h"
#include "legacy.h"
#include "next_symbol.h"
#include "exe_name.h"
#include "raw_log.h"
#include "sys.h"

extern "C" char mpk_gate_stubs[];
extern "C" const ElfW(Ehdr) __ehdr_start;

namespace mpk::shim {

constinit GateTable g_gate_table;

namespace {

GateTable &g_table = g_gate_table;

constexpr size_t kStubBytes = 16;  // gate_stubs.S: .p2align 4 per stub

constinit const cfg::Policy *g_policy = nullptr;
constinit pthread_mutex_t g_install_lock = PTHREAD_MUTEX_INITIALIZER;


// A loaded module's dynamic tables (addresses already relocated by the dynamic linker, except in
// the vDSO: see next_symbol.cc).
struct Module {
  const char *name = "";
  uintptr_t base = 0;
  const ElfW(Phdr) *phdr = nullptr;
  int phnum = 0;
  const ElfW(Sym) *symtab = nullptr;
  const char *strtab = nullptr;
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
  m->name = info->dlpi_name && info->dlpi_name[0] ? basename_of(info->dlpi_name) : exe_name();
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
      case DT_JMPREL: m->jmprel = at<ElfW(Rela)>(m->base, d->d_un.d_ptr); break;
      case DT_PLTRELSZ: m->jmprel_bytes = d->d_un.d_val; break;
      case DT_RELA: m->rela = at<ElfW(Rela)>(m->base, d->d_un.d_ptr); break;
      case DT_RELASZ: m->rela_bytes = d->d_un.d_val; break;
      default: break;
    }
  }
  return m->symtab && m->strtab;
}

// Stub numbers by target address (open addressing; targets are never removed).
constexpr int kIndexSlots = 2 * kMaxGateStubs;
struct StubIndex {
  uintptr_t key[kIndexSlots];
  int16_t stub[kIndexSlots];
};
constinit StubIndex g_index{};

uint32_t hash_addr(uintptr_t a) { return static_cast<uint32_t>((a >> 4) * 0x9E3779B97F4A7C15ull >> 40); }

int stub_of(uintptr_t target) {
  for (uint32_t i = hash_addr(target) % kIndexSlots;; i = (i + 1) % kIndexSlots) {
    if (g_index.key[i] == target) return g_index.stub[i];
    if (!g_index.key[i]) return -1;
  }
}

int new_stub(uintptr_t target, const cfg::Gate &g, int gate_index, bool allocate) {
  if (g_table.count == kMaxGateStubs) return -1;
  int n = g_table.count++;
  g_table.targets[n] = GateTarget{reinterpret_cast<void *>(target), static_cast<int16_t>(g.region), allocate};
  g_table.gate_of[n] = static_cast<uint16_t>(gate_index);
  uint32_t i = hash_addr(target) % kIndexSlots;
  while (g_index.key[i]) i = (i + 1) % kIndexSlots;
  g_index.key[i] = target;
  g_index.stub[i] = static_cast<int16_t>(n);
  return n;
}

bool is_stub(uintptr_t v) {
  auto lo = reinterpret_cast<uintptr_t>(mpk_gate_stubs);
  return v >= lo && v < lo + kMaxGateStubs * kStubBytes;
}

// The modules some gate names, with their loaded extents (found again at each install).
constexpr int kMaxGateModules = 16;
struct GateModule {
  uintptr_t lo, hi;
  char name[256];
};
GateModule g_mods[kMaxGateModules];
int g_nmods = 0;

int find_gate_modules(dl_phdr_info *info, size_t, void *) {
  Module m;
  if (!read_module(info, &m) || m.base == reinterpret_cast<uintptr_t>(&__ehdr_start)) return 0;
  for (int gi = 0; gi < g_policy->gate_count; ++gi) {
    if (!cfg::glob_match(g_policy->gates[gi].module, m.name, false)) continue;
    if (g_nmods == kMaxGateModules) {
      MPK_LOG(kError, "gates: more than %d gated modules; %s is NOT gated", kMaxGateModules, m.name);
      return 0;
    }
    GateModule &gm = g_mods[g_nmods++];
    gm.lo = m.lo;
    gm.hi = m.hi;
    size_t len = std::strlen(m.name);
    if (len >= sizeof gm.name) len = sizeof gm.name - 1;
    std::memcpy(gm.name, m.name, len);
    gm.name[len] = '\0';
    break;
  }
  return 0;
}

const GateModule *gate_module_of(uintptr_t a) {
  for (int i = 0; i < g_nmods; ++i)
    if (a >= g_mods[i].lo && a < g_mods[i].hi) return &g_mods[i];
  return nullptr;
}

// The first gate (in file order) whose module and symbol globs name `sym` of module `mod`.
int gate_for(const char *mod, const char *sym) {
  for (int gi = 0; gi < g_policy->gate_count; ++gi) {
    const cfg::Gate &g = g_policy->gates[gi];
    if (!cfg::glob_match(g.module, mod, false)) continue;
    for (int k = 0; k < g.symbol_count; ++k)
      if (cfg::glob_match(g.symbols[k], sym, false)) return gi;
  }
  return -1;
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
  bool full = false;
};

void patch_relocs(const Module &m, const ElfW(Rela) *r, size_t bytes, PatchCount *pc) {
  for (size_t i = 0; i < bytes / sizeof(ElfW(Rela)); ++i) {
    uint32_t type = ELF64_R_TYPE(r[i].r_info), sym = ELF64_R_SYM(r[i].r_info);
    if ((type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT) || !sym) continue;
    auto *slot = reinterpret_cast<uintptr_t *>(m.base + r[i].r_offset);
    uintptr_t v = *slot;
    if (is_stub(v)) continue;  // done already
    const char *name = m.strtab + m.symtab[sym].st_name;
    const GateModule *gm = gate_module_of(v);
    if (!gm && type == R_X86_64_JUMP_SLOT && v >= m.lo && v < m.hi) {
      // Lazily bound and not called yet: the slot points into this module's own PLT. Bind it now
      // to what the dynamic linker would, if that is a gated module's function.
      uintptr_t d = reinterpret_cast<uintptr_t>(global_symbol(name));
      if ((gm = gate_module_of(d))) v = d;
    }
    // Calls inside the defining module are not gated (and never go through here anyway).
    if (!gm || (m.lo >= gm->lo && m.hi <= gm->hi)) continue;
    int gi = gate_for(gm->name, name);
    if (gi < 0) continue;
    int stub = stub_of(v);
    if (stub < 0) stub = new_stub(v, g_policy->gates[gi], gi, g_policy->gates[gi].allocate);
    if (stub < 0) {
      pc->full = true;
      continue;
    }
    write_slot(m, slot, reinterpret_cast<uintptr_t>(mpk_gate_stubs) + static_cast<uintptr_t>(stub) * kStubBytes);
    ++pc->slots;
  }
}

// Every module's slots that bind to a gated function of another module.
int patch_module(dl_phdr_info *info, size_t, void *arg) {
  Module m;
  if (!read_module(info, &m) || m.base == reinterpret_cast<uintptr_t>(&__ehdr_start)) return 0;
  auto *pc = static_cast<PatchCount *>(arg);
  if (m.jmprel) patch_relocs(m, m.jmprel, m.jmprel_bytes, pc);
  if (m.rela) patch_relocs(m, m.rela, m.rela_bytes, pc);
  return 0;
}

int install_locked() {
  g_nmods = 0;
  dl_iterate_phdr(find_gate_modules, nullptr);
  if (!g_nmods) return 0;
  sys::mprotect(&g_table, sizeof g_table, PROT_READ | PROT_WRITE);
  g_table.region_keys = legacy_region_key_table();
  PatchCount pc;
  dl_iterate_phdr(patch_module, &pc);
  sys::mprotect(&g_table, sizeof g_table, PROT_READ);
  if (pc.full) MPK_LOG(kError, "gates: more than %d gated functions; calls to the rest are NOT gated", kMaxGateStubs);
  return pc.slots;
}


}  // namespace

void gates_install(const cfg::Policy &policy) {
  if (!policy.gate_count) return;
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
    // A program that does not (yet) load the module: nothing to say above the info level.
    if (!any)
      MPK_LOG(kInfo, "gate on line %u (module %s): no call into its functions from another module yet",
              policy.gates[gi].line, policy.gates[gi].module);
  }
}

void *gates_wrap_callback(void *fn) {
  if (!g_policy || !fn) return fn;
  auto a = reinterpret_cast<uintptr_t>(fn);
  pthread_mutex_lock(&g_install_lock);
  void *out = fn;
  if (const GateModule *gm = gate_module_of(a)) {
    int gi = -1;
    for (int i = 0; i < g_policy->gate_count && gi < 0; ++i)
      if (cfg::glob_match(g_policy->gates[i].module, gm->name, false)) gi = i;
    int stub = stub_of(a);
    if (stub < 0 && gi >= 0) {
      sys::mprotect(&g_table, sizeof g_table, PROT_READ | PROT_WRITE);
      stub = new_stub(a, g_policy->gates[gi], gi, /*allocate=*/false);
      sys::mprotect(&g_table, sizeof g_table, PROT_READ);
    }
    if (stub >= 0) out = mpk_gate_stubs + static_cast<size_t>(stub) * kStubBytes;
  }
  pthread_mutex_unlock(&g_install_lock);
  return out;
}

void gates_refresh() {
  if (!g_policy) return;
  pthread_mutex_lock(&g_install_lock);
  install_locked();
  pthread_mutex_unlock(&g_install_lock);
}

}  // namespace mpk::shim

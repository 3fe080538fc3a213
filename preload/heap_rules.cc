#include "heap_rules.h"

#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>

#include "gates.h"
#include "exe_name.h"
#include "raw_log.h"
#include "sys.h"

namespace mpk::shim {

namespace {

// Two tables: one current (read-only), one rebuilt when modules come and go. The rebuild happens
// at start-up and after dlopen, never on an allocation path.
constinit HeapRules g_tables[2];
}  // namespace

constinit std::atomic<const HeapRules *> g_heap_rules{&g_tables[0]};

namespace {

constinit const cfg::Policy *g_source = nullptr;
constinit bool g_any_module = false;
constinit uintptr_t g_shim_base = 0;
// One rebuild at a time (two threads' dlopen calls): both would write the same spare table.
constinit pthread_mutex_t g_rebuild_lock = PTHREAD_MUTEX_INITIALIZER;
// Set while this thread unwinds for a caller criterion: libunwind's own allocations go to glibc.
thread_local bool t_matching __attribute__((tls_model("initial-exec"))) = false;




struct ModuleScan {
  HeapRules *t;
};

int scan_module(struct dl_phdr_info *info, size_t, void *arg) {
  HeapRules &t = *static_cast<ModuleScan *>(arg)->t;
  const char *name = info->dlpi_name && info->dlpi_name[0] ? basename_of(info->dlpi_name) : exe_name();
  for (int i = 0; i < t.count; ++i) {
    HeapRule &r = t.rules[i];
    if (!(r.match & cfg::kMatchModule) || !cfg::glob_match(g_source->regions[r.region].module, name, false))
      continue;
    for (int s = 0; s < info->dlpi_phnum; ++s) {
      const ElfW(Phdr) &ph = info->dlpi_phdr[s];
      if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
      if (r.nranges == kMaxModuleRanges) {
        MPK_LOG(kWarn, "heap region '%s': more than %d code segments match module \"%s\"; %s's are not matched",
                g_source->regions[r.region].name, kMaxModuleRanges, g_source->regions[r.region].module, name);
        break;
      }
      uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
      r.ranges[r.nranges++] = HeapRule::Range{lo, lo + ph.p_memsz};
    }
  }
  return 0;
}

// Fills the table that is not current and makes it current.
void rebuild() {
  const HeapRules *cur = g_heap_rules.load(std::memory_order_relaxed);
  HeapRules *next = cur == &g_tables[0] ? &g_tables[1] : &g_tables[0];
  sys::mprotect(next, sizeof *next, PROT_READ | PROT_WRITE);
  *next = HeapRules{};
  for (int i = 0; i < g_source->region_count && next->count < cfg::kMaxHeapRegions; ++i) {
    const cfg::Region &r = g_source->regions[i];
    if (!r.heap) continue;
    HeapRule &h = next->rules[next->count++];
    h.region = i;
    h.match = r.match;
    if (r.match & cfg::kMatchMinSize) h.min_size = r.min_size;
    if (r.match & cfg::kMatchMaxSize) h.max_size = r.max_size;
    if (r.match & cfg::kMatchCaller) h.caller = &r.caller;
    h.gated = r.gate_count > 0;
  }
  if (g_any_module) {
    ModuleScan scan{next};
    dl_iterate_phdr(scan_module, &scan);
  }
  for (int i = 0; i < next->count; ++i) {
    const HeapRule &h = next->rules[i];
    next->gated |= h.gated;
    // A rule with criteria that can hold: not a module rule whose modules are absent.
    if (!h.match || ((h.match & cfg::kMatchModule) && !h.nranges)) continue;
    if (h.min_size < next->size_lo) next->size_lo = h.min_size;
    if (h.max_size > next->size_hi) next->size_hi = h.max_size;
  }
  sys::mprotect(next, sizeof *next, PROT_READ);
  // Ordering: the table is complete (and read-only) before allocators can see it.
  g_heap_rules.store(next, std::memory_order_release);
}

}  // namespace

void heap_rules_build(const cfg::Policy &policy) {
  g_source = &policy;
  for (int i = 0; i < policy.region_count; ++i)
    if (policy.regions[i].heap && (policy.regions[i].match & cfg::kMatchModule)) g_any_module = true;
  g_shim_base = cfg::module_base_of(reinterpret_cast<const void *>(&heap_rule_match));
  rebuild();
  // The other table, too, is read-only from now on (until a rebuild opens it).
  const HeapRules *cur = g_heap_rules.load(std::memory_order_relaxed);
  sys::mprotect(const_cast<HeapRules *>(cur == &g_tables[0] ? &g_tables[1] : &g_tables[0]), sizeof(HeapRules),
                PROT_READ);
}

void heap_rules_refresh() {
  if (!g_source || !g_any_module) return;
  pthread_mutex_lock(&g_rebuild_lock);
  rebuild();
  pthread_mutex_unlock(&g_rebuild_lock);
}

int heap_rule_match(const HeapRules &t, size_t size, const void *ret) {
  auto addr = reinterpret_cast<uintptr_t>(ret);
  for (int i = 0; i < t.count; ++i) {
    const HeapRule &r = t.rules[i];
    if (r.gated && (gate_regions() >> r.region & 1u)) return r.region;  // inside one of its gates
    if (!r.match) continue;  // only what its gates allocate
    if (size < r.min_size || size > r.max_size) continue;
    if (r.match & cfg::kMatchModule) {
      bool in = false;
      for (int j = 0; j < r.nranges && !in; ++j) in = addr - r.ranges[j].lo < r.ranges[j].hi - r.ranges[j].lo;
      if (!in) continue;
    }
    if (r.match & cfg::kMatchCaller) {
      // Last: unwinding costs microseconds. A nested allocation (libunwind's own) skips it.
      if (t_matching) continue;
      t_matching = true;
      bool ok = cfg::caller_matches(*r.caller, g_shim_base);
      t_matching = false;
      if (!ok) continue;
    }
    return r.region;
  }
  return -1;
}

}  // namespace mpk::shim

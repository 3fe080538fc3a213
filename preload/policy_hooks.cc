#include "policy_hooks.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "engine.h"
#include "gates.h"
#include "heap_rules.h"
#include "isolation.h"
#include "policy.h"
#include "proc_maps.h"
#include "raw_log.h"
#include "region_heap.h"
#include "sys.h"

namespace mpk::shim {

namespace {

// Parsed at start-up into static storage, then copied into the metadata arena where the program
// cannot write it; g_policy points at the copy in use.
cfg::Policy g_loaded;
const cfg::Policy *g_policy = &g_loaded;
bool g_needs_maps = false;  // some region matches on the file path, or anonymous/shared
bool g_has_isolation = false;
bool g_learning = false;

// Finds the mapping that holds addr in /proc/self/maps: its path (empty if anonymous) and MAP_*
// sharing flags. Runs under the engine's lock, once per new range, only if a region needs it.
bool describe_mapping(uintptr_t addr, char *path, size_t path_len, int *flags) {
  bool found = false;
  for_each_line("/proc/self/maps", [&](char *line) {
    MappingLine m;
    if (!parse_mapping(line, &m) || addr < m.lo || addr >= m.hi) return true;
    *flags = map_flags_of(m);
    size_t n = m.path[0] == '/' ? std::strlen(m.path) : 0;
    if (n >= path_len) n = path_len - 1;
    std::memcpy(path, m.path, n);
    path[n] = '\0';
    found = true;
    return false;
  });
  return found;
}

int match_range(uintptr_t start, size_t len, int prot, int flags, const char *known_path) {
  const cfg::Policy &p = *g_policy;
  if (!p.region_count) return -1;
  cfg::MappingInfo mi;
  mi.addr = start;
  mi.len = len;
  mi.prot = prot;
  mi.flags = flags;
  mi.path = known_path;
  char path[cfg::kPathMax + 1];
  if (flags == -1 && g_needs_maps && describe_mapping(start, path, sizeof path, &mi.flags) && path[0]) mi.path = path;
  mi.skip_module_base = cfg::module_base_of(reinterpret_cast<void *>(&match_range));
  const cfg::Region *r = cfg::match_region(p, mi);
  return r ? static_cast<int>(r - p.regions) : -1;
}

static_assert(kMaxPolicyRegions == cfg::kMaxRegions, "the engine's bound on region numbers");

RangeRule rule_of(int region) {
  const cfg::Policy &p = *g_policy;
  RangeRule rr;
  rr.promote_after = p.settings.promote_after;
  if (region < 0 || region >= p.region_count) return rr;
  const cfg::Region &r = p.regions[region];
  rr.promote_after = r.promote_after;
  rr.exec_exact = r.exec == cfg::ExecMode::kExact;
  rr.eager = r.grants == cfg::Grants::kEager;
  rr.thread_toggles = r.mprotect == cfg::MprotectMode::kThread;
  rr.action = r.action == cfg::Action::kEmulate   ? RangeRule::kEmulate
              : r.action == cfg::Action::kIsolate ? RangeRule::kIsolate
                                                  : RangeRule::kPassthrough;
  rr.audit = r.mode == cfg::Mode::kAudit || p.settings.mode == cfg::Mode::kAudit || g_learning;
  return rr;
}

// A start routine as the policy sees it: its symbol (static ones too, where the module keeps its
// symbol table), else "module+0xOFFSET".
void describe_start(uintptr_t routine, char *buf, size_t len) {
  buf[0] = '\0';
  if (cfg::symbol_at(reinterpret_cast<void *>(routine), buf, len)) return;
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(routine), &info) && info.dli_fname) {
    const char *base = std::strrchr(info.dli_fname, '/');
    format_to(buf, static_cast<int>(len), "%s+0x%lx", base ? base + 1 : info.dli_fname,
              (unsigned long)(routine - reinterpret_cast<uintptr_t>(info.dli_fbase)));
  }
}

int right_of(int region, const char *thread_name, const char *start_symbol) {
  const cfg::Policy &p = *g_policy;
  if (region < 0 || region >= p.region_count || g_learning) return cfg::kRightNone;
  return cfg::thread_right(p.regions[region], thread_name, start_symbol);
}

}  // namespace

bool learning() { return g_learning; }

const char *region_name(int region) {
  const cfg::Policy &p = *g_policy;
  return region >= 0 && region < p.region_count ? p.regions[region].name : nullptr;
}

namespace {

void open_log(const cfg::Settings &s) {
  if (s.log_to_stderr) return;
  int fd = static_cast<int>(sys::raw(SYS_openat, AT_FDCWD, (long)s.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (fd < 0) {
    MPK_LOG(kWarn, "log = \"%s\": cannot open it (errno %d); logging to stderr", s.log_path, -fd);
    return;
  }
  log_configure(log_level(), fd);
}

}  // namespace

PolicyChoice policy_load() {
  PolicyChoice pc;
  cfg::init_defaults(&g_loaded);
  const char *path = getenv("MPK_CONFIG");
  if (path && *path) {
    char err[1024];
    if (!cfg::load_policy(path, &g_loaded, err, sizeof err)) {
      if (g_loaded.settings.on_error == cfg::OnError::kPassthrough) {
        raw_log(LogLevel::kWarn, "%s", err);
        raw_log(LogLevel::kWarn, "on_error = \"passthrough\": running without the shim");
        pc.off = true;
        return pc;
      }
      raw_log(LogLevel::kError, "%s", err);
      raw_log(LogLevel::kError, "the program is not started (a bad policy fails closed; "
                                "on_error = \"passthrough\" in the file runs it without the shim)");
      _exit(1);
    }
  }
  if (const char *m = getenv("MPK_MODE"); m && *m) {
    if (!std::strcmp(m, "audit")) g_loaded.settings.mode = cfg::Mode::kAudit;
    else if (!std::strcmp(m, "enforce")) g_loaded.settings.mode = cfg::Mode::kEnforce;
    else if (!std::strcmp(m, "off")) g_loaded.settings.mode = cfg::Mode::kOff;
    else raw_log(LogLevel::kWarn, "MPK_MODE=%s: expected enforce, audit or off; ignored", m);
  }
  if (const char *l = getenv("MPK_LEARN"); l && *l && std::strcmp(l, "0")) {
    g_learning = true;
    g_loaded.settings.mode = cfg::Mode::kAudit;
  }
  const cfg::Settings &s = g_loaded.settings;
  if (s.mode == cfg::Mode::kOff) {
    pc.off = true;
    return pc;
  }
  for (int i = 0; i < g_loaded.region_count; ++i) {
    const cfg::Region &r = g_loaded.regions[i];
    if (r.match & (cfg::kMatchPath | cfg::kMatchAnonymous | cfg::kMatchShared)) g_needs_maps = true;
    if (r.action == cfg::Action::kIsolate) g_has_isolation = true;
  }
  open_log(s);
  engine_set_options(s.key_budget, s.sync_signal);
  pc.evict_rate = s.evict_rate;
  return pc;
}

LegacyHooks policy_legacy_hooks() {
  if (void *copy = engine_meta_copy(&g_loaded, sizeof g_loaded, g_loaded.used_bytes())) g_policy = static_cast<const cfg::Policy *>(copy);
  LegacyHooks h;
  h.match = match_range;
  h.rule = rule_of;
  h.region_name = region_name;
  h.has_isolation = g_has_isolation;
  IsolationHooks ih;
  ih.thread_right = right_of;
  ih.describe_start = describe_start;
  isolation_set_hooks(ih);
  return h;
}

}  // namespace mpk::shim

namespace mpk::shim {

void policy_heap_start() {
  const cfg::Policy &p = *g_policy;
  bool any = false;
  for (int i = 0; i < p.region_count; ++i) any |= p.regions[i].heap;
  if (!any) return;
#ifdef MPK_NO_ALLOCATOR
  MPK_LOG(kError, "this libmpk_shim.so is built with sanitizers and leaves the allocator to them: heap regions "
          "are NOT isolated");
  return;
#endif
  if (int rc = region_heap_reserve(kRegionHeapReserve)) {
    MPK_LOG(kError, "cannot reserve address space for the heap regions (errno %d): allocations are NOT isolated",
            -rc);
    return;
  }
  heap_rules_build(p);
}

}  // namespace mpk::shim

namespace mpk::shim {

void policy_gates_start() {
  const cfg::Policy &p = *g_policy;
  if (!p.gate_count) return;
#ifdef MPK_NO_ALLOCATOR
  MPK_LOG(kError, "this libmpk_shim.so is built with sanitizers and leaves the allocator, longjmp and exit "
          "handlers to them: call gates are NOT installed");
  return;
#endif
  // A gate opens the keys its region has when the gate is entered: a heap region gets its key
  // (its first span) now, so the first allocation inside a gate is already open to the caller.
  for (int i = 0; i < p.region_count; ++i) {
    if (!p.regions[i].heap || !p.regions[i].gate_count || !heap_rules().count) continue;
    if (void *b = region_heap_alloc(i, 16, 16)) region_heap_free(b);
  }
  gates_install(p);
}

}  // namespace mpk::shim

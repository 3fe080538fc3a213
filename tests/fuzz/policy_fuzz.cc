// policy_fuzz.cc - libFuzzer target: arbitrary bytes as a policy file (load_policy_text).
//
// The shim loads MPK_CONFIG before the program's main, from a file anyone may have written: any
// bytes must give either a Policy within the documented limits or one clear error line, never a
// crash, a leak or a hang (the sanitizers and libFuzzer's -timeout catch those). A broken
// promise below aborts, which libFuzzer reports as a crash with the input that did it.
//
// After a successful load the regions and thread rules are matched against a few mappings and
// thread names, so the globs the file gave run too (caller criteria excepted: each would unwind
// this stack and read symbol tables from disk, too slow to run per input).
#include <signal.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "policy.h"

namespace {

using namespace mpk::cfg;

constexpr char kName[] = "fuzz.toml";

[[noreturn]] void broken(const char *what, const char *err) {
  fprintf(stderr, "policy_fuzz: %s (error text: \"%s\")\n", what, err);
  abort();
}

void check_terminated(const char *buf, size_t size, const char *what, const char *err) {
  if (strnlen(buf, size) == size) broken(what, err);
}

// One error line: "fuzz.toml:LINE:COLUMN: message" or "fuzz.toml: message", printable (the
// shim writes it to stderr as `mpk: error: ...`; a newline or an escape sequence in it would
// forge or hide lines).
void check_error(const char *err) {
  size_t n = strlen(err);
  if (n == 0) broken("failure without a message", err);
  if (strncmp(err, kName, sizeof kName - 1) != 0 || err[sizeof kName - 1] != ':')
    broken("the message does not start with the file name", err);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(err[i]);
    if (c < 0x20 || c == 0x7f) broken("control character in the message", err);
  }
}

void check_defaults_after_failure(const Policy &p, const char *err) {
  if (p.region_count != 0 || p.gate_count != 0 || p.source[0] || p.settings.key_budget != 13 || p.settings.evict_rate != 100 ||
      p.settings.promote_after != 2 || p.settings.mode != Mode::kEnforce || !p.settings.log_to_stderr ||
      p.settings.sync_signal != SIGRTMAX - 2)
    broken("a failed load left more than on_error behind", err);
}

void check_glob(const char *g, size_t size, const char *what) {
  check_terminated(g, size, what, g);
  for (const char *p = g; *p; ++p)
    if (static_cast<unsigned char>(*p) < 0x20 || *p == 0x7f) broken("control character in a value", what);
}

void check_policy(const Policy &p) {
  const Settings &s = p.settings;
  if (s.key_budget < 1 || s.key_budget > 14) broken("key_budget out of range", "");
  if (s.evict_rate < 0 || s.evict_rate > 100) broken("evict_rate out of range", "");
  if (s.promote_after < 1 || s.promote_after > 1000) broken("promote_after out of range", "");
  if (s.sync_signal < SIGRTMIN || s.sync_signal > SIGRTMAX) broken("sync_signal out of range", "");
  if (!s.log_to_stderr && !s.log_path[0]) broken("log to a file without a path", "");
  check_glob(s.log_path, sizeof s.log_path, "log");
  if (strcmp(p.source, kName) != 0) broken("source is not the name given", p.source);
  if (p.region_count < 0 || p.region_count > kMaxRegions) broken("region_count out of range", "");
  for (int i = 0; i < p.region_count; ++i) {
    const Region &r = p.regions[i];
    check_glob(r.name, sizeof r.name, "region name");
    if (!r.name[0]) broken("region without a name", "");
    for (int j = 0; j < i; ++j)
      if (strcmp(p.regions[j].name, r.name) == 0) broken("duplicate region name", r.name);
    // A heap region with gates may take only what is allocated inside them.
    if (r.match == 0 && !(r.heap && r.gate_count)) broken("region without match criteria", r.name);
    if (r.heap && r.action != Action::kIsolate) broken("heap region that is not isolate", r.name);
    if (r.heap && (r.match & (kMatchPath | kMatchProt | kMatchAddress | kMatchAnonymous | kMatchShared)))
      broken("heap region with a mapping criterion", r.name);
    if (!r.heap && (r.match & kMatchModule)) broken("module criterion outside a heap region", r.name);
    check_glob(r.module, sizeof r.module, "module");
    if ((r.match & kMatchModule) && (!r.module[0] || strchr(r.module, '/'))) broken("bad module glob", r.name);
    if (r.gate_count < 0 || r.gate_count > kMaxGates) broken("gate_count out of range", r.name);
    if (r.gate_count && r.action != Action::kIsolate) broken("gates outside isolate", r.name);
    check_glob(r.path, sizeof r.path, "path");
    if ((r.match & kMatchPath) && !r.path[0]) broken("path criterion without a path", r.name);
    if ((r.match & kMatchMinSize) && (r.match & kMatchMaxSize) && r.min_size > r.max_size)
      broken("min_size above max_size", r.name);
    if ((r.match & kMatchAddress) && r.addr_lo >= r.addr_hi) broken("empty address range", r.name);
    if (r.prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) broken("prot with other bits", r.name);
    check_terminated(r.caller.glob, sizeof r.caller.glob, "caller", r.name);
    if ((r.match & kMatchCaller) && !r.caller.glob[0]) broken("caller criterion without a pattern", r.name);
    if (r.promote_after < 1 || r.promote_after > 1000) broken("region promote_after out of range", r.name);
    if (r.default_right < kRightNone || r.default_right > kRightReadWrite) broken("default out of range", r.name);
    if (r.thread_rule_count < 0 || r.thread_rule_count > kMaxThreadRules) broken("too many thread rules", r.name);
    if (r.thread_rule_count && r.action != Action::kIsolate) broken("thread rules outside isolate", r.name);
    for (int t = 0; t < r.thread_rule_count; ++t) {
      const ThreadRule &rule = r.threads[t];
      check_glob(rule.name, sizeof rule.name, "thread name");
      check_glob(rule.start, sizeof rule.start, "thread start");
      if (!rule.name[0] && !rule.start[0]) broken("thread rule without name or start", r.name);
      if (rule.right < kRightNone || rule.right > kRightReadWrite) broken("right out of range", r.name);
    }
  }
  if (p.gate_count < 0 || p.gate_count > kMaxGates) broken("gate_count out of range", "");
  int heaps = 0, per_region[kMaxRegions] = {};
  for (int i = 0; i < p.region_count; ++i) heaps += p.regions[i].heap;
  if (heaps > kMaxHeapRegions) broken("too many heap regions", "");
  for (int i = 0; i < p.gate_count; ++i) {
    const Gate &g = p.gates[i];
    if (g.region < 0 || g.region >= p.region_count) broken("gate of no region", g.module);
    else ++per_region[g.region];
    check_glob(g.module, sizeof g.module, "gate module");
    if (!g.module[0] || strchr(g.module, '/')) broken("bad gate module glob", g.module);
    if (g.symbol_count < 1 || g.symbol_count > kMaxGateSymbols) broken("gate symbol_count out of range", g.module);
    for (int k = 0; k < g.symbol_count && k < kMaxGateSymbols; ++k) {
      check_glob(g.symbols[k], sizeof g.symbols[k], "gate symbol");
      if (!g.symbols[k][0]) broken("empty gate symbol glob", g.module);
    }
  }
  for (int i = 0; i < p.region_count; ++i)
    if (per_region[i] != p.regions[i].gate_count) broken("region gate_count disagrees", p.regions[i].name);
}

// The matching the shim does on mmap/mprotect and thread start, on the loaded globs.
void exercise(const Policy &p) {
  static const MappingInfo kMappings[] = {
      {0x7f0000001000, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, nullptr, 0},
      {0x7f0000400000, 1 << 20, PROT_READ | PROT_EXEC, MAP_SHARED, "/var/cache/app/data.bin", 0},
      {0x1000, 64 << 10, PROT_NONE, kFlagsUnknown, "/usr/lib/x86_64-linux-gnu/libluajit-5.1.so.2", 0},
      {~uint64_t{0} - 4095, 4096, PROT_READ, MAP_PRIVATE, "/", 0},
  };
  static const char *const kThreads[] = {"", "worker-1", "mc-worker", "intruder", "[abc]*?\\"};
  for (const MappingInfo &m : kMappings)
    for (int i = 0; i < p.region_count; ++i)
      if (!(p.regions[i].match & kMatchCaller)) region_matches(p.regions[i], m);
  for (int i = 0; i < p.region_count; ++i)
    for (const char *t : kThreads) {
      int right = thread_right(p.regions[i], t, t);
      if (right < kRightNone || right > kRightReadWrite) broken("thread_right out of range", t);
    }
  char buf[8];
  for (int i = 0; i < p.region_count; ++i) prot_string(p.regions[i].prot, buf);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // About 250 KB: static rather than on the stack or allocated per input.
  static Policy *policy = new Policy;
  char err[1024];
  memset(err, 'x', sizeof err);
  bool ok = load_policy_text(kName, reinterpret_cast<const char *>(data), size, policy, err, sizeof err);
  check_terminated(err, sizeof err, "unterminated message", "");
  if (ok) {
    if (err[0]) broken("success with a message", err);
    check_policy(*policy);
    exercise(*policy);
  } else {
    check_error(err);
    check_defaults_after_failure(*policy, err);
  }
  return 0;
}

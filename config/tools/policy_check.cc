// policy_check.cc - mpk-policy-check FILE: validate a policy file and say what it means.
//
// Exit status: 0 valid (a summary on stdout), 1 invalid (FILE:LINE:COLUMN: message on stderr),
// 2 bad usage.
#include <signal.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "policy.h"

namespace {

using namespace mpk::cfg;

void usage(FILE *to) {
  fprintf(to,
          "usage: mpk-policy-check FILE\n"
          "\n"
          "Validates a libmpk-shim policy (the TOML file MPK_CONFIG names) and prints what it\n"
          "means. Exit status: 0 valid, 1 invalid (the error as FILE:LINE:COLUMN: message),\n"
          "2 bad usage. The schema is described in config/README.md.\n");
}

void print_size(uint64_t n) {
  static const char *const kUnits[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (u < 4 && n >= 1024 && n % 1024 == 0) { n /= 1024; ++u; }
  printf("%llu%s", static_cast<unsigned long long>(n), kUnits[u]);
}

void print_signal(int sig) {
  int lo = SIGRTMIN, hi = SIGRTMAX;
  if (hi - sig <= sig - lo) printf("%d (SIGRTMAX-%d)", sig, hi - sig);
  else printf("%d (SIGRTMIN+%d)", sig, sig - lo);
}

void print_caller(const CallerPattern &c) {
  switch (c.kind) {
    case CallerKind::kSymbol: printf("a frame in a function named %s", c.glob); break;
    case CallerKind::kModuleAny: printf("a frame anywhere in module %s", c.glob); break;
    case CallerKind::kModuleOffset:
      printf("a frame at or in the function at %s+0x%llx", c.glob, static_cast<unsigned long long>(c.offset));
      break;
  }
}

void print_region(const Policy &p, int index) {
  const Region &r = p.regions[index];
  char buf[8];
  printf("\nregion '%s' (#%d, line %u): %s\n", r.name, index + 1, r.line, action_name(r.action));
  printf(r.heap ? "  takes its memory from the heap: matches allocations where all hold:\n"
                 : "  matches mappings where all hold:\n");
  if (r.match & kMatchPath) printf("    file path matches %s\n", r.path);
  if (r.match & kMatchAnonymous) printf("    %s\n", r.anonymous ? "anonymous" : "file-backed");
  if (r.match & kMatchShared) printf("    %s\n", r.shared ? "shared (MAP_SHARED)" : "private (MAP_PRIVATE)");
  if (r.match & (kMatchMinSize | kMatchMaxSize)) {
    printf("    size ");
    if (r.match & kMatchMinSize) { printf(">= "); print_size(r.min_size); }
    if ((r.match & kMatchMinSize) && (r.match & kMatchMaxSize)) printf(" and ");
    if (r.match & kMatchMaxSize) { printf("<= "); print_size(r.max_size); }
    printf("\n");
  }
  if (r.match & kMatchProt) printf("    created or first mprotect'ed with %s\n", prot_string(r.prot, buf));
  if (r.match & kMatchAddress)
    printf("    inside [0x%llx, 0x%llx)\n", static_cast<unsigned long long>(r.addr_lo),
           static_cast<unsigned long long>(r.addr_hi));
  if (r.match & kMatchModule) printf("    the allocator was called from module %s\n", r.module);
  if (r.match & kMatchCaller) {
    printf("    call stack has ");
    print_caller(r.caller);
    printf(" (checked last)\n");
  }
  switch (r.action) {
    case Action::kEmulate:
      printf("  mprotect toggles become PKRU updates after %d call%s on the same range\n", r.promote_after,
             r.promote_after == 1 ? "" : "s");
      printf("  exec %s, grants %s\n", exec_name(r.exec), grants_name(r.grants));
      break;
    case Action::kIsolate:
      printf("  per-thread rights, %s, exec %s, grants %s, mprotect %s\n",
             r.mode == Mode::kAudit ? "audit (violations are logged and allowed)"
                                    : r.mode == Mode::kOff ? "off" : "enforce (violations fault)",
             exec_name(r.exec), grants_name(r.grants), mprotect_mode_name(r.mprotect));
      for (int i = 0; i < r.thread_rule_count; ++i) {
        const ThreadRule &t = r.threads[i];
        printf("    rule %d: ", i + 1);
        if (t.name[0]) printf("thread name %s", t.name);
        if (t.name[0] && t.start[0]) printf(" and ");
        if (t.start[0]) printf("start routine %s", t.start);
        printf(" -> %s\n", right_name(t.right));
      }
      printf("    any other thread -> %s\n", right_name(r.default_right));
      for (int i = 0; i < p.gate_count; ++i) {
        const Gate &g = p.gates[i];
        if (g.region != index) continue;
        printf("  gate (line %u): calls from other modules into %s functions ", g.line, g.module);
        for (int j = 0; j < g.symbol_count; ++j) printf("%s%s", j ? ", " : "", g.symbols[j]);
        printf(" open it for the calling thread until they return\n");
      }
      if (r.heap)
        printf("  matching allocations%s come from the region's own heap, on its key; everything else from "
               "glibc\n", r.gate_count ? " (and every allocation made inside its gates)" : "");
      if (r.mprotect == MprotectMode::kThread)
        printf("  mprotect on it changes the calling thread's right only (no system call; the pages stay "
               "readable, writable and, if mapped so, executable in the page table)\n");
      break;
    case Action::kPassthrough:
      printf("  left alone: plain mprotect, no key\n");
      break;
  }
}

void print_policy(const Policy &p) {
  const Settings &s = p.settings;
  printf("%s: valid policy, %d region%s\n\n", p.source, p.region_count, p.region_count == 1 ? "" : "s");
  printf("mode           %s\n", mode_name(s.mode));
  printf("on_error       %s\n", on_error_name(s.on_error));
  printf("key_budget     %d hardware keys\n", s.key_budget);
  printf("evict_rate     %d%% of key-cache misses evict\n", s.evict_rate);
  printf("promote_after  %d mprotect calls on a range\n", s.promote_after);
  printf("sync_signal    ");
  print_signal(s.sync_signal);
  printf("\nlog            %s\n", s.log_to_stderr ? "stderr" : s.log_path);
  if (s.mode == Mode::kOff) {
    printf("\nmode off: the shim passes every call through; the regions below are not applied\n");
  }
  for (int i = 0; i < p.region_count; ++i) print_region(p, i);
  printf("\nmappings no region matches: hot mprotect toggles on a range are emulated after %d calls\n",
         s.promote_after);
}

}  // namespace

int main(int argc, char **argv) {
  if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 0;
  }
  if (argc != 2 || argv[1][0] == '-') {
    usage(stderr);
    return 2;
  }
  // A Policy is large: keep it off the stack.
  auto *policy = static_cast<Policy *>(malloc(sizeof(Policy)));
  if (!policy) return 2;
  char err[1024];
  if (!load_policy(argv[1], policy, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    if (policy->settings.on_error == OnError::kPassthrough)
      fprintf(stderr, "(on_error = \"passthrough\": the shim would run the program without protection)\n");
    free(policy);
    return 1;
  }
  print_policy(*policy);
  free(policy);
  return 0;
}

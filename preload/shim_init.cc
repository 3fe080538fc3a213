// shim_init.cc - starting the shim inside a program, and its report at exit.
//
// The constructor runs before the program's own: it reads the environment (and the policy, see
// policy_hooks.cc), starts the engine, takes SIGSEGV and starts the legacy mprotect emulation.
// Without protection keys (CPU or kernel) the shim stays a pass-through: every interposed call is
// the plain system call. With MPK_STATS=path the counters and groups are written to path at exit
// ("%p" in the path becomes the process id).
#include <stdlib.h>
#include <unistd.h>

#include "engine.h"
#include "legacy.h"
#include "libc_real.h"
#include "policy_hooks.h"
#include "raw_log.h"
#include "shim.h"
#include "stats_file.h"
#include "stats_page.h"
#include "sys.h"
#include "violation_report.h"

namespace {

__attribute__((constructor(101))) void shim_start() {
  mpk::stats_file_remember();
  mpk::real_resolve_all();  // before any wrapper can run in a signal handler
  mpk::shim::PolicyChoice pc = mpk::shim::policy_load();
  if (pc.off) return;
  int rc = mpk::engine_init(pc.evict_rate);
  if (rc == -ENOTSUP) {
    MPK_LOG(kInfo, "protection keys unavailable: the shim passes every call through");
    return;
  }
  if (rc != 0) {
    MPK_LOG(kError, "cannot start the engine (errno %d): the shim passes every call through", -rc);
    return;
  }
  if (!mpk::stats_page_share()) MPK_LOG(kInfo, "no /dev/shm: mpk-stat cannot read this process's statistics");
  mpk::LegacyHooks hooks = mpk::shim::policy_legacy_hooks();
  if (hooks.has_isolation) mpk::shim::unwinder_init();
  mpk::shim::signals_install(hooks.has_isolation);
  if (int lrc = mpk::legacy_init(hooks))
    MPK_LOG(kError, "cannot start the mprotect emulation (errno %d)", -lrc);
  else if (hooks.has_isolation) {
    mpk::legacy_adopt_existing();
    mpk::shim::policy_heap_start();
    mpk::shim::policy_gates_start();
  }
}

__attribute__((destructor)) void shim_stop() {
  mpk::stats_file_write(mpk::legacy_stats_json);
  mpk::stats_page_unshare();
}

}  // namespace

// A process that ends with _exit (a fork child, typically) runs no destructor: its statistics page
// file goes here, so that /dev/shm does not collect one per child. (In a vfork child the page is
// the parent's and stays: stats_page_unshare() removes only this process's own.)
MPK_EXPORT void _exit(int status) {
  mpk::stats_page_unshare();
  MPK_REAL(_exit)(status);
  __builtin_unreachable();
}

MPK_EXPORT void _Exit(int status) {
  mpk::stats_page_unshare();
  MPK_REAL(_Exit)(status);
  __builtin_unreachable();
}

// shim_init.cc - starting the shim inside a program, and its report at exit.
//
// The constructor runs before the program's own: it reads the environment (and the policy, see
// policy_hooks.cc), starts the engine, takes SIGSEGV and starts the legacy mprotect emulation.
// Without protection keys (CPU or kernel) the shim stays a pass-through: every interposed call is
// the plain system call. With MPK_STATS=path the counters and groups are written to path at exit
// ("%p" in the path becomes the process id).
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "engine.h"
#include "legacy.h"
#include "policy_hooks.h"
#include "raw_log.h"
#include "shim.h"
#include "stats_page.h"
#include "sys.h"
#include "violation_report.h"

namespace {

// MPK_STATS as it was at start-up: programs may rewrite their environment (PHP's CLI moves it
// to set the process title), so it is read once, in the constructor.
char g_stats_path[512];

void remember_stats_path() {
  const char *path = getenv("MPK_STATS");
  if (!path || std::strlen(path) >= sizeof g_stats_path) {
    if (path) MPK_LOG(kWarn, "MPK_STATS: path longer than %zu bytes; no statistics file", sizeof g_stats_path - 1);
    return;
  }
  std::memcpy(g_stats_path, path, std::strlen(path) + 1);
}

void write_stats_file() {
  const char *path = g_stats_path;
  if (!*path) return;
  char real_path[512];
  int n = 0;
  for (const char *p = path; *p && n < (int)sizeof real_path - 16; ++p) {
    if (p[0] == '%' && p[1] == 'p') {
      n += mpk::format_to(real_path + n, sizeof real_path - n, "%d", mpk::sys::getpid());
      ++p;
    } else {
      real_path[n++] = *p;
    }
  }
  real_path[n] = '\0';
  static char buf[1 << 16];
  int len = mpk::legacy_stats_json(buf, sizeof buf - 1);
  buf[len++] = '\n';
  int fd = static_cast<int>(mpk::sys::raw(SYS_openat, AT_FDCWD, (long)real_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd < 0) {
    MPK_LOG(kWarn, "MPK_STATS: cannot write %s (errno %d)", real_path, -fd);
    return;
  }
  for (int off = 0; off < len;) {
    long w = mpk::sys::write(fd, buf + off, len - off);
    if (w <= 0) break;
    off += static_cast<int>(w);
  }
  mpk::sys::close(fd);
}

__attribute__((constructor(101))) void shim_start() {
  remember_stats_path();
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
}

__attribute__((destructor)) void shim_stop() {
  write_stats_file();
  mpk::stats_page_unshare();
}

}  // namespace

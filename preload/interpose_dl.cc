// interpose_dl.cc - dlopen without RTLD_DEEPBIND, and heap regions' module ranges kept current.
//
// A library opened with RTLD_DEEPBIND binds its symbols inside itself first, past LD_PRELOAD, so
// its mprotect calls would never reach the shim (PHP opens opcache.so that way). The shim drops
// the flag; everything else is the real dlopen's.
#include <dlfcn.h>

#include <atomic>

#include "gates.h"
#include "heap_rules.h"
#include "libc_real.h"
#include "raw_log.h"
#include "shim.h"

MPK_EXPORT void *dlopen(const char *file, int mode) {
  auto f = MPK_REAL(dlopen);
  if (mode & RTLD_DEEPBIND) MPK_LOG(kDebug, "dlopen(%s): RTLD_DEEPBIND dropped", file ? file : "(main)");
  void *h = f(file, mode & ~RTLD_DEEPBIND);
  if (h) {
    mpk::shim::heap_rules_refresh();  // a heap region's `module` may name what was loaded
    mpk::shim::gates_refresh();       // ... and a gate its functions, or their callers
  }
  return h;
}

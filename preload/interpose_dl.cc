// interpose_dl.cc - dlopen without RTLD_DEEPBIND.
//
// A library opened with RTLD_DEEPBIND binds its symbols inside itself first, past LD_PRELOAD, so
// its mprotect calls would never reach the shim (PHP opens opcache.so that way). The shim drops
// the flag; everything else is the real dlopen's.
#include <dlfcn.h>

#include <atomic>

#include "libc_real.h"
#include "raw_log.h"
#include "shim.h"

MPK_EXPORT void *dlopen(const char *file, int mode) {
  auto f = MPK_REAL(dlopen);
  if (mode & RTLD_DEEPBIND) MPK_LOG(kDebug, "dlopen(%s): RTLD_DEEPBIND dropped", file ? file : "(main)");
  return f(file, mode & ~RTLD_DEEPBIND);
}

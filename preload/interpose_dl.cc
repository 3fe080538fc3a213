// interpose_dl.cc - dlopen without RTLD_DEEPBIND.
//
// A library opened with RTLD_DEEPBIND binds its symbols inside itself first, past LD_PRELOAD, so
// its mprotect calls would never reach the shim (PHP opens opcache.so that way). The shim drops
// the flag; everything else is the real dlopen's.
#include <dlfcn.h>

#include <atomic>

#include "raw_log.h"
#include "shim.h"

MPK_EXPORT void *dlopen(const char *file, int mode) {
  using dlopen_fn = void *(*)(const char *, int);
  static constinit std::atomic<dlopen_fn> real{nullptr};
  dlopen_fn f = real.load(std::memory_order_acquire);
  if (!f) {
    f = reinterpret_cast<dlopen_fn>(dlsym(RTLD_NEXT, "dlopen"));
    if (!f) {
      mpk::raw_log(mpk::LogLevel::kError, "cannot resolve the real dlopen");
      __builtin_trap();
    }
    real.store(f, std::memory_order_release);
  }
  if (mode & RTLD_DEEPBIND) MPK_LOG(kDebug, "dlopen(%s): RTLD_DEEPBIND dropped", file ? file : "(main)");
  return f(file, mode & ~RTLD_DEEPBIND);
}

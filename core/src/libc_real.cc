#include "libc_real.h"

#include <dlfcn.h>

#include <atomic>

#include "raw_log.h"

namespace mpk {

namespace {
using sigaction_fn = int (*)(int, const struct sigaction *, struct sigaction *);
constinit std::atomic<sigaction_fn> g_sigaction{nullptr};
}  // namespace

int real_sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
  sigaction_fn f = g_sigaction.load(std::memory_order_acquire);
  if (!f) {
    f = reinterpret_cast<sigaction_fn>(dlsym(RTLD_NEXT, "sigaction"));
    if (!f) f = reinterpret_cast<sigaction_fn>(dlsym(RTLD_DEFAULT, "sigaction"));
    if (!f) {
      raw_log(LogLevel::kError, "cannot resolve the real sigaction");
      __builtin_trap();
    }
    g_sigaction.store(f, std::memory_order_release);
  }
  return f(sig, act, old);
}

}  // namespace mpk

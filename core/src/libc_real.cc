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

void *real_next(const char *name, std::atomic<void *> &slot) {
  void *f = slot.load(std::memory_order_acquire);
  if (!f) {
    f = dlsym(RTLD_NEXT, name);
    if (!f) {
      raw_log(LogLevel::kError, "cannot resolve the real %s", name);
      __builtin_trap();
    }
    slot.store(f, std::memory_order_release);
  }
  return f;
}

sighandler_t signal_via(int (*act_fn)(int, const struct sigaction *, struct sigaction *), int sig, sighandler_t handler) {
  struct sigaction act, old;
  __builtin_memset(&act, 0, sizeof act);
  act.sa_handler = handler;
  sigemptyset(&act.sa_mask);
  sigaddset(&act.sa_mask, sig);
  act.sa_flags = SA_RESTART;
  if (act_fn(sig, &act, &old) != 0) return SIG_ERR;
  return old.sa_handler;
}

struct sigaction default_disposition() {
  struct sigaction a;
  __builtin_memset(&a, 0, sizeof a);
  a.sa_handler = SIG_DFL;
  return a;
}

}  // namespace mpk

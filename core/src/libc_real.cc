#include "libc_real.h"

#include <dlfcn.h>

#include <atomic>

#include "raw_log.h"

namespace mpk {

// The section's bounds, from the linker (a section named like an identifier gets them).
extern "C" RealSlot __start_mpk_real[] __attribute__((weak, visibility("hidden")));
extern "C" RealSlot __stop_mpk_real[] __attribute__((weak, visibility("hidden")));

int real_sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
  return MPK_REAL(sigaction)(sig, act, old);
}

void *real_next(RealSlot &slot) {
  void *f = slot.fn.load(std::memory_order_acquire);
  if (__builtin_expect(f != nullptr, 1)) return f;
  f = dlsym(RTLD_NEXT, slot.name);
  if (!f) {
    raw_log(LogLevel::kError, "cannot resolve the real %s", slot.name);
    __builtin_trap();
  }
  slot.fn.store(f, std::memory_order_release);
  return f;
}

void real_resolve_all() {
  for (RealSlot *s = __start_mpk_real; s && s < __stop_mpk_real; ++s)
    if (!s->fn.load(std::memory_order_relaxed)) s->fn.store(dlsym(RTLD_NEXT, s->name), std::memory_order_release);
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

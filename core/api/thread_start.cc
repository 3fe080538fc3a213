// thread_start.cc - registers threads the program creates, before their start routine runs.
//
// libmpk.so exports pthread_create: a program linked with -lmpk resolves it here first. The wrapper
// hands the real pthread_create a trampoline that registers the thread with the engine and sets its
// PKRU from the current state, then calls the user's routine. Start arguments come from a fixed
// pool (no allocation); if it is ever exhausted the thread starts unwrapped and registers itself on
// its first call into the library or when a sync finds it in /proc.
#include <dlfcn.h>
#include <pthread.h>

#include <atomic>

#include "engine.h"
#include "libc_real.h"
#include "raw_log.h"

namespace {

using create_fn = int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

struct StartArgs {
  std::atomic<bool> busy{false};
  void *(*routine)(void *);
  void *arg;
  uint32_t pkru;  // the creator's simulated PKRU (engine.h: engine_thread_inherit)
};
constexpr int kPool = 4096;
constinit StartArgs g_pool[kPool];
create_fn real_create() { return MPK_REAL(pthread_create); }

void *trampoline(void *p) {
  auto *a = static_cast<StartArgs *>(p);
  void *(*routine)(void *) = a->routine;
  void *arg = a->arg;
  mpk::engine_thread_inherit(a->pkru);
  a->busy.store(false, std::memory_order_release);
  mpk::engine_thread_start(reinterpret_cast<uintptr_t>(routine));
  return routine(arg);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int pthread_create(pthread_t *t, const pthread_attr_t *attr,
                                                                      void *(*routine)(void *), void *arg) {
  create_fn real = real_create();
  if (!mpk::engine_ready()) return real(t, attr, routine, arg);
  for (int i = 0; i < kPool; ++i) {
    bool expected = false;
    if (g_pool[i].busy.load(std::memory_order_relaxed) ||
        !g_pool[i].busy.compare_exchange_strong(expected, true, std::memory_order_acquire))
      continue;
    g_pool[i].routine = routine;
    g_pool[i].arg = arg;
    g_pool[i].pkru = mpk::engine_creator_pkru();
    int rc = real(t, attr, trampoline, &g_pool[i]);
    if (rc != 0) g_pool[i].busy.store(false, std::memory_order_release);
    return rc;
  }
  return real(t, attr, routine, arg);
}

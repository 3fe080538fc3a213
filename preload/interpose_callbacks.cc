// interpose_callbacks.cc - callbacks that gated code registers run inside its gate (gates.h).
//
// A library whose functions are gated keeps its secrets in the region; its atexit handler and its
// thread-specific data destructors read them too, but they are called by libc, not through the
// library's exported functions, so no gate would open for them. They are registered through a
// gate stub instead. Without gates (or for anyone else's callbacks) the arguments pass unchanged.
#ifndef MPK_NO_ALLOCATOR  // a sanitized build: the sanitizer owns these (preload/CMakeLists.txt)
#include <pthread.h>

#include "gates.h"
#include "next_symbol.h"
#include "shim.h"

namespace {

using CxaAtexit = int (*)(void (*)(void *), void *, void *);
using KeyCreate = int (*)(pthread_key_t *, void (*)(void *));
constinit CxaAtexit g_cxa_atexit = nullptr;
constinit KeyCreate g_key_create = nullptr;

}  // namespace

extern "C" int __cxa_atexit(void (*fn)(void *), void *arg, void *dso);
MPK_EXPORT int __cxa_atexit(void (*fn)(void *), void *arg, void *dso) {
  auto wrapped = reinterpret_cast<void (*)(void *)>(mpk::shim::gates_wrap_callback(reinterpret_cast<void *>(fn)));
  return mpk::shim::next_cached("__cxa_atexit", &g_cxa_atexit)(wrapped, arg, dso);
}

MPK_EXPORT int pthread_key_create(pthread_key_t *key, void (*destructor)(void *)) {
  auto wrapped =
      reinterpret_cast<void (*)(void *)>(mpk::shim::gates_wrap_callback(reinterpret_cast<void *>(destructor)));
  return mpk::shim::next_cached("pthread_key_create", &g_key_create)(key, wrapped);
}

#endif  // MPK_NO_ALLOCATOR

// interpose_cxa.cc - C++ exception objects never come from a gate's heap region.
//
// A gated function that throws allocates the exception object inside the gate; the unwinder, and
// the handler that catches it, read it after the gate has closed. The C++ runtime's allocation of
// exception objects is therefore made outside the gates' heap criterion (gates.h), whoever throws.
#ifndef MPK_NO_ALLOCATOR  // a sanitized build: the sanitizer owns these (preload/CMakeLists.txt)
#include <cstddef>

#include "gates.h"
#include "next_symbol.h"
#include "shim.h"

namespace {

using AllocFn = void *(*)(size_t);

void *call_next(const char *name, AllocFn *slot, size_t n) {
  AllocFn f = mpk::shim::next_cached(name, slot);
  mpk::shim::GateAllocationsOff off;
  return f(n);
}

constinit AllocFn g_exception = nullptr, g_dependent = nullptr;

}  // namespace

MPK_EXPORT void *__cxa_allocate_exception(size_t n) noexcept {
  return call_next("__cxa_allocate_exception", &g_exception, n);
}

// (Its argument list is empty in the ABI; the runtime's own ignores what is passed.)
MPK_EXPORT void *__cxa_allocate_dependent_exception() noexcept {
  return call_next("__cxa_allocate_dependent_exception", &g_dependent, 0);
}

#endif  // MPK_NO_ALLOCATOR

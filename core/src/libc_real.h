// libc_real.h - libc functions the engine needs in their real form, never a wrapper.
//
// libmpk.so itself exports wrappers (pthread_create, sigaction, signal); inside the library a
// plain call could bind to them. Each real function has a slot (MPK_REAL) listed in the section
// mpk_real, and real_resolve_all() fills every slot with dlsym(RTLD_NEXT) when the engine starts,
// before the program's code runs: no wrapper calls dlsym later (dlsym takes the loader's lock and
// may allocate, which a wrapper called from a signal handler must not). A wrapper called before
// that (by another library's constructor) resolves its own slot; a lookup that finds no function
// is fatal with the function's name.
#pragma once

#include <signal.h>

#include <atomic>

namespace mpk {

int real_sigaction(int sig, const struct sigaction *act, struct sigaction *old);

struct RealSlot {
  const char *name;
  std::atomic<void *> fn;
};

// The next definition of slot.name after this library (dlsym RTLD_NEXT), cached in the slot;
// fatal, with its name, if there is none.
void *real_next(RealSlot &slot);
// Resolves every slot of this library (at start-up). Functions the C library lacks stay empty
// and are fatal only if called.
void real_resolve_all();

// The real NAME, a C function declared by a system header: a plain load once resolved.
#define MPK_REAL(NAME)                                                                     \
  reinterpret_cast<decltype(&::NAME)>(::mpk::real_next(*[]() -> ::mpk::RealSlot * {        \
    __attribute__((section("mpk_real"), used)) static constinit ::mpk::RealSlot slot{#NAME, {nullptr}}; \
    return &slot;                                                                          \
  }()))

// glibc's signal() on top of a sigaction function: BSD semantics (SA_RESTART, the signal itself
// blocked while its handler runs). Returns the old handler or SIG_ERR.
sighandler_t signal_via(int (*act)(int, const struct sigaction *, struct sigaction *), int sig, sighandler_t handler);

// A zeroed sigaction whose handler is SIG_DFL.
struct sigaction default_disposition();

}  // namespace mpk

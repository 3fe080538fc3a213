// libc_real.h - libc functions the engine needs in their real form, never a wrapper.
//
// libmpk.so itself exports wrappers (pthread_create, sigaction, signal); inside the library a
// plain call could bind to them. These are resolved once with dlsym(RTLD_NEXT), and a lookup that
// finds no function is fatal with the function's name.
#pragma once

#include <signal.h>

#include <atomic>

namespace mpk {

int real_sigaction(int sig, const struct sigaction *act, struct sigaction *old);

// The next definition of a libc function after this library (dlsym RTLD_NEXT), cached in slot;
// fatal, with its name, if there is none.
void *real_next(const char *name, std::atomic<void *> &slot);

// glibc's signal() on top of a sigaction function: BSD semantics (SA_RESTART, the signal itself
// blocked while its handler runs). Returns the old handler or SIG_ERR.
sighandler_t signal_via(int (*act)(int, const struct sigaction *, struct sigaction *), int sig, sighandler_t handler);

// A zeroed sigaction whose handler is SIG_DFL.
struct sigaction default_disposition();

}  // namespace mpk

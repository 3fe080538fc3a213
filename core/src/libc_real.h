// libc_real.h - libc functions the engine needs in their real form, never a wrapper.
//
// libmpk.so itself exports wrappers (pthread_create, sigaction, signal); inside the library a
// plain call could bind to them. These are resolved once with dlsym(RTLD_NEXT), and a lookup that
// finds no function is fatal with the function's name.
#pragma once

#include <signal.h>

namespace mpk {

int real_sigaction(int sig, const struct sigaction *act, struct sigaction *old);

}  // namespace mpk

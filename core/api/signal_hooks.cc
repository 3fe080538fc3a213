// signal_hooks.cc - keeps the sync signal the library's own, and out of the program's handlers.
//
// libmpk.so exports sigaction and signal. A handler the program installs gets the sync signal
// added to its mask (sync.h: sync_mask_handler() says why), and the sync signal itself cannot be
// taken over: installing a handler for it fails with EINVAL, as the kernel answers for SIGKILL.
#include <signal.h>

#include <cerrno>
#include <cstring>

#include "libc_real.h"
#include "raw_log.h"
#include "sync.h"

extern "C" __attribute__((visibility("default"))) int sigaction(int sig, const struct sigaction *act,
                                                                 struct sigaction *old) {
  int sync = mpk::sync_signal_number();
  if (sync && sig == sync && act) {
    MPK_LOG(kWarn, "refusing a handler for signal %d: libmpk uses it to synchronize threads (MPK_SYNC_SIGNAL)", sig);
    errno = EINVAL;
    return -1;
  }
  if (!sync || !act) return mpk::real_sigaction(sig, act, old);
  struct sigaction masked = *act;
  mpk::sync_mask_handler(&masked);
  return mpk::real_sigaction(sig, &masked, old);
}

extern "C" __attribute__((visibility("default"))) sighandler_t signal(int sig, sighandler_t handler) {
  return mpk::signal_via(sigaction, sig, handler);
}

// interpose_threads.cc - thread names, which isolation policies match on.
//
// pthread_setname_np (on any thread) and prctl(PR_SET_NAME) (on the calling thread) change a
// thread's name; after a rename that succeeded the shim re-reads every thread's name and
// re-applies the isolation policy, granting and revoking at once (isolation.h). pthread_create
// comes from the engine (core/api/thread_start.cc): it registers each new thread before its start
// routine runs.
#include <dlfcn.h>
#include <pthread.h>
#include <sys/prctl.h>

#include <atomic>
#include <cstdarg>

#include "isolation.h"
#include "libc_real.h"
#include "raw_log.h"
#include "shim.h"
#include "sys.h"

MPK_EXPORT int pthread_setname_np(pthread_t thread, const char *name) {
  auto f = MPK_REAL(pthread_setname_np);
  int rc = f(thread, name);
  if (rc == 0) mpk::isolation_rescan();
  return rc;
}

MPK_EXPORT int prctl(int option, ...) {
  va_list ap;
  va_start(ap, option);
  unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
  unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
  va_end(ap);
  long rc = mpk::sys::raw(SYS_prctl, option, (long)a2, (long)a3, (long)a4, (long)a5);
  if (rc == 0 && option == PR_SET_NAME) mpk::isolation_rescan();
  return mpk::shim::c_ret(static_cast<int>(rc));
}

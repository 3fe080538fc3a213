// shim.h - what the preload's files share: the export macro, errno conversion, and the
// signal bookkeeping the interposers need.
#pragma once

#include <signal.h>

#include <cerrno>

#define MPK_EXPORT extern "C" __attribute__((visibility("default")))

namespace mpk::shim {

// 0 / -errno from the engine or a raw system call to the C convention.
inline int c_ret(int rc) {
  if (rc < 0) {
    errno = -rc;
    return -1;
  }
  return rc;
}
inline void *c_ptr(void *p) {
  long v = reinterpret_cast<long>(p);
  if (v < 0 && v >= -4095) {
    errno = static_cast<int>(-v);
    return reinterpret_cast<void *>(-1);
  }
  return p;
}

// Installs the shim's SIGSEGV handler (after the engine is ready); program handlers installed
// before become the forwarding targets.
// audit_steps: also take SIGTRAP, which ends an audit-mode single step (isolation.h).
void signals_install(bool audit_steps);
// The program's view of its signal mask: the shim keeps SIGSEGV and the sync signal deliverable,
// and remembers whether the program wanted SIGSEGV blocked in this thread.
// strip_mask() copies a mask without them and records the program's SIGSEGV wish; false (nothing
// recorded) when `in` cannot be read, and the caller hands the kernel the program's own pointer
// so that the answer is the kernel's EFAULT.
bool strip_mask(int how, const sigset_t *in, sigset_t *out);
// Copies the part of a sigset the kernel reads, without faulting: false if it is unreadable.
bool read_sigset(const sigset_t *in, sigset_t *out);
bool segv_view();
// From now on sigaltstack gives a small alternate stack room for the shim's handler
// (interpose_altstack.cc); called once the shim handles SIGSEGV.
void altstack_enable();
// How many program handlers this thread has run (a waiting call interrupted by the sync signal
// alone is resumed: interpose_sigwait.cc).
extern constinit thread_local uint64_t t_handlers_run __attribute__((tls_model("initial-exec")));
void set_segv_view(bool blocked);
// A longjmp to target_sp is about to run: the program signal handlers it jumps out of end here
// (their count, the SIGSEGV view, simulated signal frames), as their return would have ended them.
void handlers_leave_below(uintptr_t target_sp);

}  // namespace mpk::shim

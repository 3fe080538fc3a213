// interpose_sigwait.cc - signal masks a program hands to the kernel for the length of one call.
//
// sigprocmask and pthread_sigmask are in interpose_signals.cc. These calls take a mask too:
// - sigsuspend, ppoll, pselect, epoll_pwait, epoll_pwait2 run with the given mask while they wait.
//   The sync signal (and SIGSEGV, which the shim needs for lazy grants) is taken out of it: a
//   thread that waits there with the sync signal blocked would stall every revocation.
// - sigwait, sigwaitinfo, sigtimedwait and signalfd accept the signals of their set. The sync
//   signal is taken out: the program never consumes one (as sigaction refuses a handler for it).
// A sync signal handled during sigsuspend or sigwaitinfo is invisible to the program: the call
// goes on instead of failing with EINTR. ppoll, pselect, epoll_pwait and sigtimedwait fail with
// EINTR as after any handled signal (the kernel never restarts them; a program retries them).
// The program's set is never written to; a copy goes to the kernel.
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/signalfd.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "libc_real.h"
#include "shim.h"
#include "sync.h"
#include "sys.h"

namespace mpk::shim {

// Ordering: the copy goes through the kernel (process_vm_readv on this process), so a bad
// pointer is an error here and then the kernel's EFAULT for the call, never a SIGSEGV in the shim.
bool read_sigset(const sigset_t *in, sigset_t *out) {
  std::memset(out, 0, sizeof *out);
  constexpr size_t kKernelSet = 8;  // _NSIG / 8: what every signal system call reads
  struct iovec local{out, kKernelSet}, remote{const_cast<sigset_t *>(in), kKernelSet};
  long rc = sys::raw(SYS_process_vm_readv, sys::getpid(), (long)&local, 1, (long)&remote, 1, 0);
  if (rc == -EFAULT) return false;
  if (rc != static_cast<long>(kKernelSet)) std::memcpy(out, in, kKernelSet);  // refused by a sandbox
  return true;
}

}  // namespace mpk::shim

namespace {

// The mask a waiting call may install: without the sync signal and SIGSEGV.
const sigset_t *wait_mask(const sigset_t *in, sigset_t *copy) {
  int sync = mpk::sync_signal_number();
  if (!in || !sync || !mpk::shim::read_sigset(in, copy)) return in;  // no engine: nothing to keep open
  sigdelset(copy, sync);
  sigdelset(copy, SIGSEGV);
  return copy;
}

// The set of signals a call accepts: without the sync signal.
const sigset_t *accept_set(const sigset_t *in, sigset_t *copy) {
  int sync = mpk::sync_signal_number();
  if (!in || !sync || !mpk::shim::read_sigset(in, copy)) return in;
  sigdelset(copy, sync);
  return copy;
}

}  // namespace

// Did only sync signals interrupt a call? `handlers` is counted from the program's call, `syncs`
// from this round's: a program handler that ran at any time since the program called means the
// call ends with EINTR, as natively; syncs alone are invisible, so the call goes on.
struct OnlySyncs {
  uint64_t handlers = mpk::shim::t_handlers_run, syncs = 0;
  void round() { syncs = mpk::t_syncs_taken; }
  bool program_handler_ran() const { return mpk::shim::t_handlers_run != handlers; }
  bool interrupted(int rc) const {
    return rc == -1 && errno == EINTR && mpk::t_syncs_taken != syncs && !program_handler_ran();
  }
};

MPK_EXPORT int sigsuspend(const sigset_t *mask) {
  sigset_t m;
  const sigset_t *k = wait_mask(mask, &m);
  if (k == mask) return MPK_REAL(sigsuspend)(mask);  // no engine, or the kernel's EFAULT
  // Ordering: every signal is blocked between two rounds, so one that arrives after a sync ended
  // a round waits for the next, whose mask takes it as the program's single call would have
  // (unblocked, a handler would run outside sigsuspend, which would then wait for another). The
  // program's mask comes back last.
  sigset_t all, old;
  sigfillset(&all);
  mpk::sys::raw(SYS_rt_sigprocmask, SIG_BLOCK, (long)&all, (long)&old, 8);
  OnlySyncs s;
  int rc;
  do {
    s.round();
    rc = MPK_REAL(sigsuspend)(k);
  } while (s.interrupted(rc));
  int saved = errno;
  mpk::sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8);
  errno = saved;
  return rc;
}

MPK_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask) {
  sigset_t m;
  return MPK_REAL(ppoll)(fds, n, timeout, wait_mask(mask, &m));
}

MPK_EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *e, const struct timespec *timeout,
                       const sigset_t *mask) {
  sigset_t m;
  return MPK_REAL(pselect)(n, r, w, e, timeout, wait_mask(mask, &m));
}

MPK_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *mask) {
  sigset_t m;
  return MPK_REAL(epoll_pwait)(epfd, ev, max, timeout, wait_mask(mask, &m));
}

MPK_EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *timeout,
                            const sigset_t *mask) {
  sigset_t m;
  return MPK_REAL(epoll_pwait2)(epfd, ev, max, timeout, wait_mask(mask, &m));
}

MPK_EXPORT int sigwait(const sigset_t *set, int *sig) {
  sigset_t s;
  return MPK_REAL(sigwait)(accept_set(set, &s), sig);
}

MPK_EXPORT int sigwaitinfo(const sigset_t *set, siginfo_t *info) {
  sigset_t s;
  const sigset_t *k = accept_set(set, &s);
  OnlySyncs only;
  for (;;) {
    only.round();
    int rc = MPK_REAL(sigwaitinfo)(k, info);
    if (!only.interrupted(rc)) return rc;
    if (only.program_handler_ran()) {  // between two rounds: natively it would have ended the call
      errno = EINTR;
      return -1;
    }
  }
}

MPK_EXPORT int sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *timeout) {
  sigset_t s;
  return MPK_REAL(sigtimedwait)(accept_set(set, &s), info, timeout);
}

MPK_EXPORT int signalfd(int fd, const sigset_t *mask, int flags) {
  sigset_t s;
  return MPK_REAL(signalfd)(fd, accept_set(mask, &s), flags);
}

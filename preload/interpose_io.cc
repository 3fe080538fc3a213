// interpose_io.cc - system calls that read or write program memory, repaired on EFAULT.
//
// The kernel checks the caller's PKRU when it copies to or from user memory and answers EFAULT
// (or a short count, when the copy stops part way) instead of faulting, so a lazy grant (which
// needs a fault) never happens for a buffer handed to a system call. Before the call each wrapper
// brings the thread's PKRU up to the rights it holds if a grant has not reached it yet
// (legacy_catch_up: a read of PKRU and of the key rights when nothing is pending); after an
// EFAULT where the shim emulates, it repairs once more and retries (a grant that raced the call).
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>

#include "legacy.h"
#include "libc_real.h"
#include "raw_log.h"
#include "shim.h"

namespace {

bool catch_up(const void *p, size_t n) { return mpk::legacy_catch_up(p, n); }
bool repair(const void *p, size_t n) { return mpk::legacy_repair_efault(p, n); }
bool catch_up(const struct iovec *iov, int n) {
  bool any = false;
  for (int i = 0; i < n && i < 1024; ++i) any |= mpk::legacy_catch_up(iov[i].iov_base, iov[i].iov_len);
  return any;
}
bool repair(const struct iovec *iov, int n) {
  bool any = false;
  for (int i = 0; i < n && i < 1024; ++i) any |= mpk::legacy_repair_efault(iov[i].iov_base, iov[i].iov_len);
  return any;
}

}  // namespace

// One wrapper: RET NAME(PARAMS) calling the real NAME(ARGS); BUF and LEN name the call's buffer
// (or its iovec array and count). After an EFAULT a repair that changed something retries.
#define MPK_IO_WRAPPER(RET, NAME, PARAMS, ARGS, BUF, LEN)                                \
  MPK_EXPORT RET NAME PARAMS {                                                           \
    auto real = MPK_REAL(NAME);                                                          \
    catch_up(BUF, LEN);                                                                  \
    RET r = real ARGS;                                                                   \
    if (r < 0 && errno == EFAULT && repair(BUF, LEN)) r = real ARGS;                     \
    return r;                                                                            \
  }

MPK_IO_WRAPPER(ssize_t, read, (int fd, void *buf, size_t n), (fd, buf, n), buf, n)
MPK_IO_WRAPPER(ssize_t, write, (int fd, const void *buf, size_t n), (fd, buf, n), buf, n)
MPK_IO_WRAPPER(ssize_t, pread, (int fd, void *buf, size_t n, off_t o), (fd, buf, n, o),
               buf, n)
MPK_IO_WRAPPER(ssize_t, pread64, (int fd, void *buf, size_t n, off_t o), (fd, buf, n, o),
               buf, n)
MPK_IO_WRAPPER(ssize_t, pwrite, (int fd, const void *buf, size_t n, off_t o), (fd, buf, n, o),
               buf, n)
MPK_IO_WRAPPER(ssize_t, pwrite64, (int fd, const void *buf, size_t n, off_t o), (fd, buf, n, o),
               buf, n)
MPK_IO_WRAPPER(ssize_t, readv, (int fd, const struct iovec *iov, int n), (fd, iov, n), iov, n)
MPK_IO_WRAPPER(ssize_t, writev, (int fd, const struct iovec *iov, int n), (fd, iov, n), iov, n)
MPK_IO_WRAPPER(ssize_t, recv, (int fd, void *buf, size_t n, int flags), (fd, buf, n, flags),
               buf, n)
MPK_IO_WRAPPER(ssize_t, recvfrom,
               (int fd, void *buf, size_t n, int flags, struct sockaddr *from, socklen_t *fromlen),
               (fd, buf, n, flags, from, fromlen), buf, n)
MPK_IO_WRAPPER(ssize_t, recvmsg, (int fd, struct msghdr *m, int flags), (fd, m, flags),
               m->msg_iov, static_cast<int>(m->msg_iovlen))
MPK_IO_WRAPPER(ssize_t, send, (int fd, const void *buf, size_t n, int flags), (fd, buf, n, flags),
               buf, n)
MPK_IO_WRAPPER(ssize_t, sendto,
               (int fd, const void *buf, size_t n, int flags, const struct sockaddr *to, socklen_t tolen),
               (fd, buf, n, flags, to, tolen), buf, n)
MPK_IO_WRAPPER(ssize_t, sendmsg, (int fd, const struct msghdr *m, int flags), (fd, m, flags),
               m->msg_iov, static_cast<int>(m->msg_iovlen))

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

bool repair_iov(const struct iovec *iov, int n) {
  bool any = false;
  for (int i = 0; i < n && i < 1024; ++i) any |= mpk::legacy_repair_efault(iov[i].iov_base, iov[i].iov_len);
  return any;
}

}  // namespace

// One wrapper: RET NAME(PARAMS) calling the real NAME(ARGS); REPAIR is the expression that
// repairs the buffers (true: retry).
#define MPK_IO_WRAPPER(RET, NAME, PARAMS, ARGS, REPAIR)                                  \
  MPK_EXPORT RET NAME PARAMS {                                                           \
    static constinit std::atomic<void *> real_slot{nullptr};                             \
    auto real = reinterpret_cast<RET(*) PARAMS>(mpk::real_next(#NAME, real_slot));              \
    mpk::legacy_catch_up();                                                              \
    RET r = real ARGS;                                                                   \
    if (r < 0 && errno == EFAULT && (REPAIR)) r = real ARGS;                             \
    return r;                                                                            \
  }

MPK_IO_WRAPPER(ssize_t, read, (int fd, void *buf, size_t n), (fd, buf, n), mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, write, (int fd, const void *buf, size_t n), (fd, buf, n), mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, pread, (int fd, void *buf, size_t n, off_t o), (fd, buf, n, o),
               mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, pread64, (int fd, void *buf, size_t n, off_t o), (fd, buf, n, o),
               mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, pwrite, (int fd, const void *buf, size_t n, off_t o), (fd, buf, n, o),
               mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, pwrite64, (int fd, const void *buf, size_t n, off_t o), (fd, buf, n, o),
               mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, readv, (int fd, const struct iovec *iov, int n), (fd, iov, n), repair_iov(iov, n))
MPK_IO_WRAPPER(ssize_t, writev, (int fd, const struct iovec *iov, int n), (fd, iov, n), repair_iov(iov, n))
MPK_IO_WRAPPER(ssize_t, recv, (int fd, void *buf, size_t n, int flags), (fd, buf, n, flags),
               mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, recvfrom,
               (int fd, void *buf, size_t n, int flags, struct sockaddr *from, socklen_t *fromlen),
               (fd, buf, n, flags, from, fromlen), mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, recvmsg, (int fd, struct msghdr *m, int flags), (fd, m, flags),
               repair_iov(m->msg_iov, static_cast<int>(m->msg_iovlen)))
MPK_IO_WRAPPER(ssize_t, send, (int fd, const void *buf, size_t n, int flags), (fd, buf, n, flags),
               mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, sendto,
               (int fd, const void *buf, size_t n, int flags, const struct sockaddr *to, socklen_t tolen),
               (fd, buf, n, flags, to, tolen), mpk::legacy_repair_efault(buf, n))
MPK_IO_WRAPPER(ssize_t, sendmsg, (int fd, const struct msghdr *m, int flags), (fd, m, flags),
               repair_iov(m->msg_iov, static_cast<int>(m->msg_iovlen)))

// sys.h - the engine's only door to the kernel: raw system calls.
//
// Contract: every function here is a single system call made without libc's wrapper, so it never
// touches errno, never allocates and cannot be interposed. Each returns the kernel's raw result:
// >= 0 on success, -errno on failure (pointers: a value in [-4095, -1] cast to pointer on failure).
// All of them are async-signal-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/syscall.h>
#include <sys/types.h>

namespace mpk::sys {

inline long raw(long nr, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  long ret;
  register long r10 asm("r10") = d;
  register long r8 asm("r8") = e;
  register long r9 asm("r9") = f;
  asm volatile("syscall"
               : "=a"(ret)
               : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
               : "rcx", "r11", "memory");
  return ret;
}

inline bool failed(long r) { return r < 0 && r >= -4095; }

inline void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return reinterpret_cast<void *>(raw(SYS_mmap, (long)addr, (long)len, prot, flags, fd, off));
}
inline bool mmap_failed(void *p) { return failed(reinterpret_cast<long>(p)); }
inline void *mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr) {
  return reinterpret_cast<void *>(raw(SYS_mremap, (long)old, (long)old_len, (long)new_len, flags, (long)new_addr));
}
inline int munmap(void *addr, size_t len) { return (int)raw(SYS_munmap, (long)addr, (long)len); }
inline int mprotect(void *addr, size_t len, int prot) {
  return (int)raw(SYS_mprotect, (long)addr, (long)len, prot);
}
inline int pkey_mprotect(void *addr, size_t len, int prot, int pkey) {
  return (int)raw(SYS_pkey_mprotect, (long)addr, (long)len, prot, pkey);
}
inline int pkey_alloc(unsigned flags, unsigned rights) { return (int)raw(SYS_pkey_alloc, flags, rights); }
inline int pkey_free(int pkey) { return (int)raw(SYS_pkey_free, pkey); }
inline int gettid() { return (int)raw(SYS_gettid); }
inline int getpid() { return (int)raw(SYS_getpid); }
inline int tgkill(int tgid, int tid, int sig) { return (int)raw(SYS_tgkill, tgid, tid, sig); }
inline int membarrier(int cmd, unsigned flags) { return (int)raw(SYS_membarrier, cmd, flags); }
inline long write(int fd, const void *buf, size_t n) { return raw(SYS_write, fd, (long)buf, (long)n); }
inline long read(int fd, void *buf, size_t n) { return raw(SYS_read, fd, (long)buf, (long)n); }
inline int open(const char *path, int flags) { return (int)raw(SYS_open, (long)path, flags, 0); }
inline int close(int fd) { return (int)raw(SYS_close, fd); }
inline long getdents64(int fd, void *buf, size_t n) { return raw(SYS_getdents64, fd, (long)buf, (long)n); }
inline int sched_yield() { return (int)raw(SYS_sched_yield); }

}  // namespace mpk::sys

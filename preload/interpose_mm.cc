// interpose_mm.cc - mmap, munmap, mprotect and mremap.
//
// Each goes through the legacy emulation (core/src/legacy.h), which passes straight to the kernel
// for anything that is not, or does not touch, an emulated page group. Before the shim is ready
// they are plain system calls. Nothing here allocates.
#include <sys/mman.h>

#include <cstdarg>

#include "legacy.h"
#include "shim.h"
#include "sys.h"

using mpk::shim::c_ptr;
using mpk::shim::c_ret;

MPK_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return c_ptr(mpk::legacy_mmap(addr, len, prot, flags, fd, off));
}

MPK_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return c_ptr(mpk::legacy_mmap(addr, len, prot, flags, fd, off));
}

MPK_EXPORT int munmap(void *addr, size_t len) { return c_ret(mpk::legacy_munmap(addr, len)); }

MPK_EXPORT int mprotect(void *addr, size_t len, int prot) { return c_ret(mpk::legacy_mprotect(addr, len, prot)); }

MPK_EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...) {
  void *new_addr = nullptr;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    new_addr = va_arg(ap, void *);
    va_end(ap);
  }
  return c_ptr(mpk::legacy_mremap(old, old_len, new_len, flags, new_addr));
}

// pkey_alloc, pkey_free, pkey_mprotect (and syscall() with their numbers): interpose_pkey.cc.

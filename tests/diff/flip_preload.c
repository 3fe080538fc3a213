/* flip_preload.c - a deliberately wrong LD_PRELOAD library for testing mpk_diff itself.
 *
 * Every 5th mprotect() call in a process returns 0 without changing anything. `mpk_diff compare
 * --preload` on this library must report mismatches and exit 1: proof that the comparison can
 * fail. It is never installed. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_uint calls;

__attribute__((visibility("default"))) int mprotect(void *addr, size_t len, int prot) {
  if (atomic_fetch_add(&calls, 1) % 5 == 4) return 0;
  return (int)syscall(SYS_mprotect, addr, len, prot);
}

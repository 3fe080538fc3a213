/*
 * mpk.h - libmpk: virtualized Intel Memory Protection Keys for user space.
 *
 * Contract. A page group is a set of pages that always share one permission; it is named by a
 * virtual key (vkey), any non-negative int the caller picks. vkeys are unlimited: groups are cached
 * in the 15 hardware keys and evicted least-recently-used, and an evicted group keeps its exact
 * permission through the page table. A hardware key is never reused while any thread still holds a
 * right to it or any page still carries it (no protection-key-use-after-free).
 *
 * A new group is closed: no thread may access it until mpk_mprotect() opens it for the whole
 * process or a thread opens it for itself with mpk_begin(). The prot given when the group is created
 * (mpk_mmap) or grown is its ceiling: no later right may exceed it.
 *
 * Every call is thread-safe. Errors return -1 (MAP_FAILED or NULL for pointers) and set errno:
 *   EPERM    the call came before mpk_init()
 *   EINVAL   a negative or unknown vkey, or bad arguments
 *   ENOTSUP  (mpk_init) the CPU or kernel has no protection keys
 *   EBUSY    (mpk_begin) every hardware key is pinned by an open domain
 *   EACCES   a right exceeds the group's ceiling
 *   ENOMEM   out of memory or address space
 *
 * Threads must be created with pthread_create after the library is loaded, or exist when
 * mpk_init() is called; both are tracked. Link with -lmpk (pkg-config: libmpk).
 */
#ifndef MPK_H
#define MPK_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Initialise the library. evict_rate (0..100) is the percentage of mpk_mprotect() key-cache
 * misses that evict another group to load the missed one; the others apply the permission with
 * mprotect() and leave the group in the page table. A second call is harmless and returns 0. */
int mpk_init(int evict_rate);

/* mmap() the pages and add them to group vkey, creating it (closed) if needed. prot is the
 * ceiling; adding pages to an existing group raises its ceiling to the union of both. */
void *mpk_mmap(int vkey, void *addr, size_t len, int prot, int flags, int fd, off_t offset);

/* Unmap every page of group vkey (mpk_mmap'ed and mpk_malloc'ed), free its key, forget vkey. */
int mpk_munmap(int vkey);

/* Give the calling thread alone exactly prot (PROT_NONE, PROT_READ, PROT_READ|PROT_WRITE) on
 * group vkey until mpk_end(vkey). A second mpk_begin() on the same vkey changes the right. The
 * group stays in a hardware key while any thread has it open. PROT_EXEC cannot be thread-local
 * (keys never restrict instruction fetch): it is EINVAL here, use mpk_mprotect(). */
int mpk_begin(int vkey, int prot);

/* Close the calling thread's domain on vkey: the thread returns to the process-wide right. */
int mpk_end(int vkey);

/* Like mprotect() on every page of group vkey, for the whole process: when it returns, every
 * thread without an open domain on vkey has exactly prot, in user code and in system calls. */
int mpk_mprotect(int vkey, int prot);

/* 16-byte-aligned memory inside group vkey (created with a read/write ceiling if needed; grows as
 * it fills). Allocator metadata lives outside the group's pages, so mpk_free() works while the
 * group is closed. */
void *mpk_malloc(int vkey, size_t size);

/* Free memory from mpk_malloc(vkey, ...). An invalid or double free is reported on stderr, sets
 * errno to EINVAL and leaves the heap intact. mpk_free(vkey, NULL) does nothing. */
void mpk_free(int vkey, void *ptr);

#ifdef __cplusplus
}
#endif

#endif /* MPK_H */

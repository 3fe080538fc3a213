// engine.h - the operations behind the libmpk C API.
//
// Each returns 0 (or a pointer) on success and -errno on failure (pointers: nullptr and *err set);
// the API layer turns that into errno. All are thread-safe. Before engine_init() succeeded they
// fail with -EPERM.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace mpk {

// Settings that take precedence over MPK_KEY_BUDGET / MPK_SYNC_SIGNAL; call before engine_init().
// Out-of-range values are ignored.
void engine_set_options(int key_budget, int sync_signal);
int engine_init(int evict_rate);
// A block of size bytes in the metadata arena (write-protected outside the engine) holding a copy
// of the first `used` bytes of src, the rest zero; or nullptr.
void *engine_meta_copy(const void *src, size_t size, size_t used);
bool engine_ready();
void *engine_mmap(int vkey, void *addr, size_t len, int prot, int flags, int fd, off_t off, int *err);
int engine_munmap(int vkey);
int engine_begin(int vkey, int prot);
int engine_end(int vkey);
int engine_mprotect(int vkey, int prot);
void *engine_malloc(int vkey, size_t size, int *err);
int engine_free(int vkey, void *p);

// What a new thread inherits: clone copies its creator's PKRU register; a simulated register
// (key_backend.h) is handed over by the thread-start trampoline with these two.
uint32_t engine_creator_pkru();
void engine_thread_inherit(uint32_t pkru);

// Thread lifecycle: called in a new thread before its start routine, and at its exit.
void engine_thread_start(uintptr_t start_routine);
void engine_thread_exit();

// Snapshot of the counters and gauges as JSON; returns its length.
int engine_stats_json(char *buf, int cap);

}  // namespace mpk

// export.cc - the libmpk C API: argument checks live in the engine; this layer maps its -errno
// results to the C conventions (-1 / MAP_FAILED / NULL with errno).
#include <sys/mman.h>

#include <cerrno>

#include "engine.h"
#include "signal_defer.h"
#include "mpk.h"
#include "stats_file.h"

#define MPK_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
int ret(int rc) {
  if (rc < 0) {
    errno = -rc;
    return -1;
  }
  return rc;
}
// A signal handler that interrupted this thread inside the library calls it again: refused, as
// waiting for the interrupted call's locks would never end (signal_defer.h).
bool reentered() {
  if (!mpk::engine_reentered()) return false;
  errno = EDEADLK;
  return true;
}
// MPK_STATS=path: the engine's counters as JSON at exit (the path is read at load time).
__attribute__((constructor)) void stats_at_load() { mpk::stats_file_remember(); }
__attribute__((destructor)) void stats_at_exit() {
  if (mpk::engine_ready()) mpk::stats_file_write([](char *buf, int cap) { return mpk::engine_stats_json(buf, cap); });
}

}  // namespace

MPK_EXPORT int mpk_init(int evict_rate) { return reentered() ? -1 : ret(mpk::engine_init(evict_rate)); }

MPK_EXPORT void *mpk_mmap(int vkey, void *addr, size_t len, int prot, int flags, int fd, off_t offset) {
  if (reentered()) return MAP_FAILED;
  int err = 0;
  void *p = mpk::engine_mmap(vkey, addr, len, prot, flags, fd, offset, &err);
  if (!p) {
    errno = err;
    return MAP_FAILED;
  }
  return p;
}

MPK_EXPORT int mpk_munmap(int vkey) { return reentered() ? -1 : ret(mpk::engine_munmap(vkey)); }
MPK_EXPORT int mpk_begin(int vkey, int prot) { return reentered() ? -1 : ret(mpk::engine_begin(vkey, prot)); }
MPK_EXPORT int mpk_end(int vkey) { return reentered() ? -1 : ret(mpk::engine_end(vkey)); }
MPK_EXPORT int mpk_mprotect(int vkey, int prot) { return reentered() ? -1 : ret(mpk::engine_mprotect(vkey, prot)); }

MPK_EXPORT void *mpk_malloc(int vkey, size_t size) {
  if (reentered()) return nullptr;
  int err = 0;
  void *p = mpk::engine_malloc(vkey, size, &err);
  if (!p) errno = err;
  return p;
}

MPK_EXPORT void mpk_free(int vkey, void *ptr) {
  if (reentered()) return;
  int rc = mpk::engine_free(vkey, ptr);
  if (rc < 0) errno = -rc;
}

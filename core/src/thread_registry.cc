#include "thread_registry.h"

#include <fcntl.h>

#include <new>

#include "meta_arena.h"
#include "sys.h"

namespace mpk {

bool ThreadRegistry::init(MetaArena &arena) {
  void *mem = arena.alloc(sizeof(ThreadRecord) * kMaxThreads);
  if (!mem) return false;
  records_ = static_cast<ThreadRecord *>(mem);
  for (int i = 0; i < kMaxThreads; ++i) new (&records_[i]) ThreadRecord();
  high_water_.store(0, std::memory_order_release);
  return true;
}

ThreadRecord *ThreadRegistry::find(int tid) const {
  int hi = high_water_.load(std::memory_order_acquire);
  for (int i = 0; i < hi; ++i)
    if (records_[i].tid.load(std::memory_order_acquire) == tid) return &records_[i];
  return nullptr;
}

ThreadRecord *ThreadRegistry::add(int tid) {
  if (ThreadRecord *stale = find(tid)) remove(stale);
  for (int i = 0; i < kMaxThreads; ++i) {
    ThreadRecord &r = records_[i];
    int expected = 0;
    if (r.tid.load(std::memory_order_relaxed) != 0) continue;
    // Free records are always clean (remove() resets them), so claiming is a single CAS.
    if (!r.tid.compare_exchange_strong(expected, tid, std::memory_order_seq_cst)) continue;
    int hi = high_water_.load(std::memory_order_relaxed);
    while (hi < i + 1 && !high_water_.compare_exchange_weak(hi, i + 1, std::memory_order_seq_cst)) {
    }
    return &r;
  }
  return nullptr;
}

void ThreadRegistry::remove(ThreadRecord *r) {
  r->shadow.store(0, std::memory_order_relaxed);
  r->shadow_known.store(false, std::memory_order_relaxed);
  r->in_lib.store(0, std::memory_order_relaxed);
  r->sent.store(0, std::memory_order_relaxed);
  r->acks.store(0, std::memory_order_relaxed);
  for (auto &d : r->dom) d.store(0, std::memory_order_relaxed);
  for (auto &d : r->iso) d.store(0, std::memory_order_relaxed);
  for (char &c : r->name) c = 0;
  r->start_routine = 0;
  r->start_sym[0] = '\0';
  r->tid.store(0, std::memory_order_release);
}

int ThreadRegistry::adopt_all_tasks() {
  int fd = sys::open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fd;
  alignas(8) char buf[4096];
  int added = 0;
  for (;;) {
    long n = sys::getdents64(fd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      struct Dirent {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[1];
      };
      auto *d = reinterpret_cast<Dirent *>(buf + off);
      off += d->reclen;
      int tid = 0;
      const char *p = d->name;
      if (*p < '0' || *p > '9') continue;
      for (; *p >= '0' && *p <= '9'; ++p) tid = tid * 10 + (*p - '0');
      if (!find(tid) && add(tid)) ++added;
    }
  }
  sys::close(fd);
  return added;
}

}  // namespace mpk

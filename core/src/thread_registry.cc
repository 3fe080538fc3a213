#include "thread_registry.h"

#include <fcntl.h>

#include <new>

#include "meta_arena.h"
#include "sys.h"

namespace mpk {

bool ThreadRegistry::init(MetaArena &arena) {
  void *mem = arena.alloc(sizeof(ThreadRecord) * kMaxThreads);
  if (!mem) return false;
  // The arena's memory is fresh and zeroed, which is what a free record holds: nothing is
  // written here, so the array's pages are only touched (faulted in) as threads use them.
  records_ = static_cast<ThreadRecord *>(mem);
  g_roots.records = records_;
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
    live_[i / 64].fetch_or(uint64_t{1} << (i % 64), std::memory_order_seq_cst);
    return &r;
  }
  return nullptr;
}

void ThreadRegistry::remove(ThreadRecord *r) {
  live_[r->word()].fetch_and(~(r->bit()), std::memory_order_seq_cst);
  for (auto &h : r->held) h.store(0, std::memory_order_relaxed);
  r->pending.store(0, std::memory_order_relaxed);
  r->in_lib.store(0, std::memory_order_relaxed);
  r->sent.store(0, std::memory_order_relaxed);
  r->acks.store(0, std::memory_order_relaxed);
  r->deferred.store(0, std::memory_order_relaxed);
  for (auto &d : r->dom) d.store(0, std::memory_order_relaxed);
  for (auto &d : r->iso) d.store(0, std::memory_order_relaxed);
  for (char &c : r->name) c = 0;
  r->start_routine = 0;
  r->start_sym[0] = '\0';
  r->tid.store(0, std::memory_order_release);
}

int open_task_dir() { return sys::open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }
long read_dir(int fd, char *buf, size_t n) { return sys::getdents64(fd, buf, n); }
void close_dir(int fd) { sys::close(fd); }

int dirent_tid(const char *buf, long *off) {
  struct Dirent {
    uint64_t ino;
    int64_t off;
    unsigned short reclen;
    unsigned char type;
    char name[1];
  };
  auto *d = reinterpret_cast<const Dirent *>(buf + *off);
  *off += d->reclen;
  int tid = 0;
  const char *p = d->name;
  if (*p < '0' || *p > '9') return 0;
  for (; *p >= '0' && *p <= '9'; ++p) tid = tid * 10 + (*p - '0');
  return tid;
}

}  // namespace mpk

// thread_registry.h - every thread of the process the engine knows, with what its PKRU holds.
//
// Records live in the metadata arena in a fixed array; claiming and releasing a record is
// lock-free (the sync signal handler reads records without the engine lock). A record holds:
//   tid      0 when free
//   index()  its place in the array: its bit in the live set and in each key's holder set
//            (computed from its address: the array's base is a root, so nothing is written to
//            the 8,192 records at start-up and their pages are touched only when used)
//   held[k]  the Rights this thread's PKRU holds on hardware key k, as last written by the thread
//            itself or by its sync handler (never less than the register: a revoker trusts it)
//   pending  keys a revoker changed for this thread that its PKRU has not taken yet: the sync
//            handler, or the thread on its way out of the engine, applies them
//   dom[k]   the thread's open domain on hardware key k: 0 none, else Rights + 1 (mpk_begin)
//   in_lib   non-zero while the thread is inside the engine's slow paths; a sync signal then only
//            acks, and the thread applies `pending` on the way out (engine_core.cc: leave)
//   sent/acks/deferred  sync signals sent to it, handled by it, and taken inside a handler and
//            left for later (sync.cc): sent > acks + deferred means one is in flight
//   iso[k]   the thread's right on an isolated group's key k (isolation.h), name, start_routine
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "cpu.h"
#include "roots.h"

namespace mpk {

class MetaArena;

// /proc/self/task reading for adopt_all_tasks (raw system calls).
int open_task_dir();
long read_dir(int fd, char *buf, size_t n);
// The tid of the directory entry at *off (0 for "." and ".."), advancing *off past it.
int dirent_tid(const char *buf, long *off);
void close_dir(int fd);

// Aligned to cache lines: each thread writes its own record on its fast paths.
struct alignas(64) ThreadRecord {
  std::atomic<int> tid{0};
  std::atomic<uint8_t> held[kHwKeys] = {};
  std::atomic<uint32_t> pending{0};
  std::atomic<uint32_t> in_lib{0};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> deferred{0};
  std::atomic<uint8_t> dom[kHwKeys] = {};
  // Isolation (isolation.h): the thread's own right on an isolated group's key, Rights + 1; 0 none.
  // A domain (dom) takes precedence.
  std::atomic<uint8_t> iso[kHwKeys] = {};
  char name[16] = {};          // the thread's name (comm) as last read, for policies and reports
  uintptr_t start_routine = 0; // the routine it was created with (0: not seen)
  char start_sym[96] = {};     // its name as the policy sees it ("" unknown)

  int index() const { return static_cast<int>(this - g_roots.records); }
  // Its word and bit in a thread bit set (shifts: index() is signed, and a division by 64 of a
  // signed value is not free).
  int word() const { return static_cast<int>(static_cast<unsigned>(index()) >> 6); }
  uint64_t bit() const { return uint64_t{1} << (static_cast<unsigned>(index()) & 63u); }
};

class ThreadRegistry {
 public:
  static constexpr int kMaxThreads = 8192;

  bool init(MetaArena &arena);
  // Claims a record for tid (dropping a stale record with the same tid: the kernel reused it).
  ThreadRecord *add(int tid);
  ThreadRecord *find(int tid) const;
  // Resets the record and frees it. The caller has already dropped the record's domain pins.
  void remove(ThreadRecord *r);
  // Adds every thread listed in /proc/self/task that has no record, calling f on each new record.
  // Returns how many, or -errno.
  template <typename F>
  int adopt_all_tasks(F &&f) {
    int added = 0;
    int rc = list_tasks([&](int tid) {
      if (find(tid)) return;
      if (ThreadRecord *r = add(tid)) {
        f(*r);
        ++added;
      }
    });
    return rc < 0 ? rc : added;
  }

  template <typename F>
  void for_each_live(F &&f) const {
    int hi = high_water_.load(std::memory_order_acquire);
    for (int i = 0; i < hi; ++i)
      if (records_[i].tid.load(std::memory_order_acquire) > 0) f(records_[i]);
  }
  const std::atomic<uint64_t> *live_set() const { return live_; }
  // Words of a record bitmap in use (records below the high-water mark).
  int words() const { return (high_water_.load(std::memory_order_acquire) + 63) / 64; }
  ThreadRecord *at(int index) const { return &records_[index]; }
  // Is r the address of one of the registry's records?
  bool owns(const ThreadRecord *r) const {
    auto a = reinterpret_cast<uintptr_t>(r), b = reinterpret_cast<uintptr_t>(records_);
    return a >= b && a < b + kMaxThreads * sizeof(ThreadRecord) && (a - b) % sizeof(ThreadRecord) == 0;
  }

 private:
  // Calls f(tid) for each entry of /proc/self/task. Returns 0 or -errno.
  template <typename F>
  static int list_tasks(F &&f);
  ThreadRecord *records_ = nullptr;
  std::atomic<int> high_water_{0};
  std::atomic<uint64_t> live_[kMaxThreads / 64] = {};
};

template <typename F>
int ThreadRegistry::list_tasks(F &&f) {
  int fd = open_task_dir();
  if (fd < 0) return fd;
  alignas(8) char buf[4096];
  for (;;) {
    long n = read_dir(fd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      int tid = dirent_tid(buf, &off);
      if (tid > 0) f(tid);
    }
  }
  close_dir(fd);
  return 0;
}

}  // namespace mpk

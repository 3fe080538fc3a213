// thread_registry.h - every thread of the process the engine knows, with its shadow PKRU.
//
// Records live in the metadata arena in a fixed array; claiming and releasing a record is
// lock-free (the sync signal handler reads records without the engine lock). A record holds:
//   tid      0 when free
//   shadow   what the thread's PKRU should hold for the engine's keys, as last written by the
//            thread itself or by its sync handler; only valid once `shadow_known`
//   dom[k]   the thread's open domain on hardware key k: 0 none, else Rights + 1 (mpk_begin)
//   in_lib   non-zero while the thread is inside the engine; a sync signal then only acks, and
//            the thread recomputes its PKRU on the way out (engine.h: the exit protocol)
//   sent/acks  sync signals sent to it and handled by it: sent > acks means one is in flight
//   iso[k]   the thread's right on an isolated group's key k (isolation.h), name, start_routine
#pragma once

#include <atomic>
#include <cstdint>

#include "cpu.h"

namespace mpk {

class MetaArena;

struct ThreadRecord {
  std::atomic<int> tid{0};
  std::atomic<uint32_t> shadow{0};
  std::atomic<bool> shadow_known{false};
  std::atomic<uint32_t> in_lib{0};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> acks{0};
  std::atomic<uint8_t> dom[kHwKeys] = {};
  // Isolation (isolation.h): the thread's own right on an isolated group's key, Rights + 1; 0 none.
  // A domain (dom) takes precedence.
  std::atomic<uint8_t> iso[kHwKeys] = {};
  char name[16] = {};          // the thread's name (comm) as last read, for policies and reports
  uintptr_t start_routine = 0; // the routine it was created with (0: not seen)
  char start_sym[96] = {};     // its name as the policy sees it ("" unknown)
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
  // Adds every thread listed in /proc/self/task that has no record. Returns how many, or -errno.
  int adopt_all_tasks();

  template <typename F>
  void for_each_live(F &&f) const {
    int hi = high_water_.load(std::memory_order_acquire);
    for (int i = 0; i < hi; ++i)
      if (records_[i].tid.load(std::memory_order_acquire) > 0) f(records_[i]);
  }

 private:
  ThreadRecord *records_ = nullptr;
  std::atomic<int> high_water_{0};
};

}  // namespace mpk

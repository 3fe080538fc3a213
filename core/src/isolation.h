// isolation.h - per-thread rights on a region (the shim's isolation policies).
//
// An isolated group is a mapping whose pages carry a pinned hardware key at exactly the program's
// permission; which threads may use it is decided per thread by the policy (thread name, start
// routine) through a hook, stored in each ThreadRecord's iso[key], and granted eagerly: a thread
// whose right grows because another thread renamed it is signalled at once, so its system calls
// on the region never meet EFAULT. A thread that touches the region without the right takes a
// protection fault: the shim reports it and, in audit mode, lets that one access through
// (single-stepping it with the key open), in enforce mode stops the program.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine_state.h"
#include "page_group.h"

namespace mpk {

// IsolationHooks (roots.h): the policy's answers, kept with the roots.
void isolation_set_hooks(const IsolationHooks &hooks);

// Caller is inside a Section, holds the lock, and has just mapped [start, start+len) (nobody else
// knows the address yet). Makes it an isolated group; nullptr when no key can be had. With
// thread_toggles the pages are put at read/write (and execute if prot has it) on the key, and the
// program's mprotect calls on them change the calling thread's right only (isolation_toggle).
PageGroup *isolation_adopt(EngineState &st, int vkey, uintptr_t start, size_t len, int prot, int region,
                           bool audit, bool thread_toggles, ThreadRecord *self);
// Caller is inside Section s and holds the lock: the program's mprotect(addr, len, prot) on a part
// of g, a group with thread toggles; or, with `fresh`, its mmap(MAP_FIXED) of new pages there at
// prot (a JIT committing part of its reservation), which are tagged first. Returns the call's
// result (0, or the kernel's -errno).
int isolation_toggle(EngineState &st, PageGroup &g, void *addr, size_t len, int prot, ThreadRecord *self,
                     uint32_t *grant, bool fresh = false);
// Caller is inside a Section and holds the lock: the group is going away.
void isolation_forget(PageGroup &g);
// In a fork child (the engine's atfork handler, holding the lock): the parts the forking thread
// has open for writing are its under its new tid; the other threads' are gone with them.
void isolation_after_fork(EngineState &st, ThreadRecord *self);
// Caller is inside a Section (not holding the lock): gives a new thread its rights.
void isolation_thread_start(EngineState &st, ThreadRecord &rec);
// Re-reads every thread's name and re-applies the policy (after a rename). Takes the lock.
void isolation_rescan();
bool isolation_any();

// About a protection fault on hardware key `key` (async-signal-safe): false if the key holds no
// isolated group.
struct IsolationFault {
  int region;
  uintptr_t start;
  size_t len;
  bool audit;
};
bool isolation_fault_info(int key, IsolationFault *out);
// Audit mode: opens `key` in the signal frame's PKRU and sets the trap flag, so the faulting
// instruction runs once and the next SIGTRAP closes it again (isolation_step_close).
bool isolation_step_open(int key, void *uctx);
// Learning: gives the faulting thread the right it just used (read, or read-write for a write) on
// `key` for good, in its record and in the signal frame, so it stops faulting on that key (a
// single step per access would make a bulk copy crawl). Each thread name's use is still reported
// once per access site before this.
bool isolation_learn_grant(int key, bool write, void *uctx);
// SIGTRAP: true if it ended an audit step (the frame's PKRU is back to the thread's rights).
bool isolation_step_close(void *uctx);

}  // namespace mpk

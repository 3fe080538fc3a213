// engine_internal.h - the machinery shared by the engine's operations (engine.cc) and the legacy
// mprotect emulation (legacy.cc). Not part of any public interface.
//
// Rules: every mutation happens inside a Section (metadata writable, thread marked in the engine)
// and under Locked (g_lock). After changing key_rights or domains call bump_gen() and then
// sync_keys() (sync.h) for the keys that lost rights.
#pragma once

#include <pthread.h>
#include <sys/mman.h>

#include "engine_state.h"
#include "page_group.h"

namespace mpk {

constexpr int kDataProt = PROT_READ | PROT_WRITE;
constexpr int kAllProt = PROT_READ | PROT_WRITE | PROT_EXEC;

inline EngineState *state() { return g_state.load(std::memory_order_acquire); }

// The calling thread's record, registering it if it arrived some way we did not see.
ThreadRecord *self_record(EngineState &st);
// Leaves the engine: writes this thread's PKRU from the state (see engine_core.cc).
void leave(EngineState &st, ThreadRecord *rec);

// A critical section: metadata writable for this thread, the thread marked inside the engine.
struct Section {
  EngineState &st;
  ThreadRecord *rec;
  explicit Section(EngineState &s) : st(s) {
    wrpkru(inside_meta(rdpkru()));
    rec = self_record(st);
    // Only this thread writes its in_lib; its own sync handler is the reader that must see it
    // (revokers hold the lock, and leave() orders the way out).
    if (rec) {
      rec->in_lib.store(rec->in_lib.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
    }
  }
  ~Section() { leave(st, rec); }
  Section(const Section &) = delete;
  Section &operator=(const Section &) = delete;
};

struct Locked {
  Locked() { pthread_mutex_lock(&g_lock); }
  ~Locked() { pthread_mutex_unlock(&g_lock); }
};

inline bool valid_prot(int prot) { return (prot & ~kAllProt) == 0; }

void publish_rights(EngineState &st, int key, Rights r);
void bump_gen(EngineState &st);
// Applies prot with key to every range of g. Returns 0 or -errno (first failure).
int tag_ranges(const PageGroup &g, int prot, int key);
// Moves a resident group back to key 0 at exactly its process-wide prot. Returns 0 or -errno.
// retag = false: the caller retags every page itself, at once, before anything else can use the
// key (the key is only released here).
int unload(EngineState &st, PageGroup &g, bool retag = true);
// Loads g into a hardware key; returns the key or 0 (none to be had, or a thread not synchronized).
int load(EngineState &st, PageGroup &g, bool may_evict, ThreadRecord *self);
PageGroup *new_group(EngineState &st, int vkey);
void delete_group(EngineState &st, PageGroup *g);
// Gives g the process-wide permission prot (caller checked it is within the ceiling). 0 or -errno.
int set_group_prot(EngineState &st, PageGroup &g, int prot, ThreadRecord *self);
// Adds fresh pages (PROT_NONE on key 0) to g at its current state. Returns 0 or -errno.
int adopt_pages(EngineState &st, PageGroup &g, void *p, size_t len, int prot);

}  // namespace mpk

// engine_internal.h - the machinery shared by the engine's operations (engine.cc) and the legacy
// mprotect emulation (legacy.cc). Not part of any public interface.
//
// Rules: every slow-path mutation happens inside a Section (metadata writable, thread marked in the
// engine) and under Locked (g_lock); a change of a key's rights, its resident group's permission or
// its pins also holds that key's KeyLock. After changing rights call sync_keys() (sync.h) for the
// key. The fast paths (fast_path.h) hold only a KeyLock.
#pragma once

#include <pthread.h>
#include <sys/mman.h>

#include "engine_state.h"
#include "page_group.h"
#include "signal_defer.h"

namespace mpk {

constexpr int kDataProt = PROT_READ | PROT_WRITE;
constexpr int kAllProt = PROT_READ | PROT_WRITE | PROT_EXEC;

inline EngineState *state() { return g_state.load(std::memory_order_acquire); }

// The calling thread's record, registering it if it arrived some way we did not see.
ThreadRecord *self_record(EngineState &st);
// Leaves the engine: writes this thread's PKRU. Keys in `grant` (those of the operation the
// thread performed) take exactly what the state gives it; every other key is only lowered where
// the state gives less (revocations always apply, grants never spread to other keys).
void leave(EngineState &st, ThreadRecord *rec, uint32_t grant);

// The id a thread holds key locks with (its record's index + 1; minus its tid without a record).
int lock_id(const ThreadRecord *rec);

// One hardware key's lock (KeyState.lock): a spin lock, re-entrant for its holder; key 0 locks nothing.
class KeyLock {
 public:
  KeyLock(EngineState &st, int k);
  ~KeyLock();
  KeyLock(const KeyLock &) = delete;
  KeyLock &operator=(const KeyLock &) = delete;
  // Non-blocking: false if another thread holds it (the caller takes the slow path).
  static bool try_acquire(KeyState &ks, int tid);
  // Blocking: spins (yielding) until acquired, marked in ks.waiters meanwhile (the fast paths
  // defer to it).
  static void wait_acquire(KeyState &ks, int id);
  static void release(KeyState &ks) { ks.lock.store(0, std::memory_order_release); }
  // The fast paths': the bias if this thread holds it, else try_acquire(); false if another
  // thread holds the lock or its bias, or a slow path waits for it. May bias the lock to `id`
  // (may_bias: membarrier works). *biased says which release_fast() undoes.
  static bool acquire_fast(KeyState &ks, int id, bool may_bias, bool *biased) {
    // Inline: the biased case is a store, a compiler barrier and two loads (engine_core.cc).
    if (ks.bias.load(std::memory_order_relaxed) == id) {
      ks.bias_busy.store(1, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
      if (ks.bias.load(std::memory_order_acquire) == id) [[likely]] {
        *biased = true;
        return true;
      }
      ks.bias_busy.store(0, std::memory_order_release);
    }
    *biased = false;
    return acquire_unbiased(ks, id, may_bias);
  }
  static bool acquire_unbiased(KeyState &ks, int id, bool may_bias);
  static void release_fast(KeyState &ks, bool biased) {
    if (biased) ks.bias_busy.store(0, std::memory_order_release);
    else release(ks);
  }
  // Takes the bias away from whoever has it (the caller holds `lock`, so no one takes it again).
  static void revoke_bias(KeyState &ks, int id);

 private:
  EngineEntry entry_;  // first: marked inside the engine before the lock is taken
  KeyState *ks_;
  bool owned_;
};

// A critical section: metadata writable for this thread, the thread marked inside the engine.
struct Section {
  EngineEntry entry;  // first: marked inside the engine before anything else, cleared last
  EngineState &st;
  ThreadRecord *rec;
  uint32_t grant = 0;  // keys whose rights this thread's operation changed for itself (leave)
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
  ~Section() { leave(st, rec, grant); }
  Section(const Section &) = delete;
  Section &operator=(const Section &) = delete;
};

struct Locked {
  EngineEntry entry;  // constructed before the lock is taken, destroyed after it is released
  Locked() { pthread_mutex_lock(&g_lock); }
  ~Locked() { pthread_mutex_unlock(&g_lock); }
};

inline bool valid_prot(int prot) { return (prot & ~kAllProt) == 0; }

// Publishes r as key k's process-wide rights (caller holds k's KeyLock or g_lock while loading).
void publish_rights(EngineState &st, int key, Rights r);
// The fast paths' view of g in its key's KeyState, and the lookup hints (caller holds g_lock and
// the key's lock).
void publish_view(EngineState &st, PageGroup &g);
// Forgets the view of a key whose group left it (caller holds its lock).
void clear_view(KeyState &ks);
// Applies prot with key to every range of g but its page-level exceptions. Returns 0 or -errno
// (first failure).
int tag_ranges(const PageGroup &g, int prot, int key);
// Folds g's plain page-level exceptions back into it: their pages take the group's key and page
// permission again (its prot on key 0 when not resident); keyed ones stay. Returns 0 or -errno.
int fold_excepts(EngineState &st, PageGroup &g);
// Moves a resident group back to key 0 at exactly its process-wide prot. Returns 0 or -errno.
// retag = false: the caller retags every page itself, at once, before anything else can use the
// key (the key is only released here).
int unload(EngineState &st, PageGroup &g, bool retag = true);
// A fast path's revocation could not reach every thread: moves the group on key k (if it is still
// there) to the page table, which enforces its permission for every thread. Takes g_lock.
void demote_key(EngineState &st, int k);
// Loads g into a hardware key; returns the key or 0 (none to be had, or a thread not synchronized).
int load(EngineState &st, PageGroup &g, bool may_evict, ThreadRecord *self);
PageGroup *new_group(EngineState &st, int vkey);
void delete_group(EngineState &st, PageGroup *g);
// Gives g the process-wide permission prot (caller checked it is within the ceiling). 0 or -errno.
// The calling thread's own PKRU takes the change when it leaves the Section (s.grant).
int set_group_prot(EngineState &st, PageGroup &g, int prot, Section &s);
// Adds fresh pages (PROT_NONE on key 0) to g at its current state. Returns 0 or -errno.
int adopt_pages(EngineState &st, PageGroup &g, void *p, size_t len, int prot);

}  // namespace mpk

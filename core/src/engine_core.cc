// engine_core.cc - the engine's shared machinery: entering and leaving, loading and unloading keys,
// group lifetime. The public operations (engine.cc) and the legacy mprotect emulation (legacy.cc)
// are built from these.
#include "engine_internal.h"

#include <linux/membarrier.h>
#include <sys/mman.h>

#include <cerrno>
#include <new>

#include "heap.h"
#include "raw_log.h"
#include "stats.h"
#include "stats_page.h"
#include "sync.h"
#include "sys.h"

namespace mpk {

constinit pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
constinit thread_local ThreadRecord *t_self __attribute__((tls_model("initial-exec"))) = nullptr;

void self_rec_corrupt(const void *p) {
  raw_log(LogLevel::kError, "this thread's record pointer (%p) was overwritten: stopping", p);
  __builtin_trap();
}

// The calling thread's record, registering it if it arrived some way we did not see.
ThreadRecord *self_record(EngineState &st) {
  if (ThreadRecord *self = self_rec(st)) return self;
  ThreadRecord *r = st.threads.find(sys::gettid());
  if (!r) r = register_unknown(st);
  t_self = r;
  return r;
}

// Leaves the engine: write this thread's PKRU from the state, metadata back to write-disabled.
// Ordering: held[] and in_lib are stored before `pending` and `acks` are read again; a revoker
// stores the new rights and the thread's pending bit before it reads held[] and in_lib (all
// seq_cst). So either the revoker signals this thread, or this thread finds the pending bit, or
// its own computation already read the new rights. A sync handler that ran while the metadata was
// open (in_lib 0, the last write not yet made) changed acks: go round again.
void leave(EngineState &st, ThreadRecord *rec, uint32_t grant) {
  if (!rec) {
    wrpkru(outside_meta(lowered_to_state(st, with_wanted(st, rdpkru(), nullptr, grant), nullptr)));
    return;
  }
  if (rec->in_lib.load(std::memory_order_relaxed) > 1) {
    rec->in_lib.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  // Inside a program's signal handler the interrupted context resumes later with its own PKRU:
  // what the thread is noted to hold may then only grow.
  const bool may_lower = t_handler_depth == 0;
  for (;;) {
    // Pending changes of exact keys are taken whole; on lazy keys lowered_to_state() below takes
    // what they lower and nothing more.
    grant |= rec->pending.exchange(0, std::memory_order_seq_cst) & exact_keys(st);
    uint32_t v = pkru_from_state(st, rec, grant);
    if (note_held_all(st, rec, v, may_lower)) held_fence(st);
    // Ordering: held[] was changed after the state was read. A revoker or eager granter that
    // published meanwhile and read the old held[] saw nothing to send: read the state again and
    // start over if it moved (pkru_agrees).
    if (!pkru_agrees(st, rec, v)) {
      grant = st.managed_mask.load(std::memory_order_acquire) & exact_keys(st);
      continue;
    }
    uint64_t acks = rec->acks.load(std::memory_order_relaxed);
    rec->in_lib.store(0, std::memory_order_seq_cst);  // the StoreLoad fence before pending is read
    wrpkru(outside_meta(v));
    if (rec->pending.load(std::memory_order_seq_cst) == 0 && rec->acks.load(std::memory_order_relaxed) == acks)
      return;
    wrpkru(inside_meta(rdpkru()));
    rec->in_lib.store(1, std::memory_order_seq_cst);
    // A sync handler that ran after in_lib was cleared applied its keys to the register, and the
    // write above may have undone that. It took their pending bits with it: every exact key is
    // set from the state again (lazy ones are lowered below in any case).
    grant = st.managed_mask.load(std::memory_order_acquire) & exact_keys(st);
  }
}

int lock_id(const ThreadRecord *rec) { return rec ? rec->index() + 1 : -sys::gettid(); }

bool KeyLock::try_acquire(KeyState &ks, int id) {
  int32_t expected = 0;
  return ks.lock.load(std::memory_order_relaxed) == 0 &&
         ks.lock.compare_exchange_strong(expected, id, std::memory_order_acquire, std::memory_order_relaxed);
}

KeyLock::KeyLock(EngineState &st, int k) : ks_(&st.keys[k]), owned_(false) {
  if (k <= 0) return;  // no key: nothing to lock
  int id = lock_id(t_self);
  if (ks_->lock.load(std::memory_order_relaxed) == id) return;  // re-entered by its holder
  wait_acquire(*ks_, id);
  owned_ = true;
}

void KeyLock::wait_acquire(KeyState &ks, int id) {
  if (!try_acquire(ks, id)) {
    // A holder may be waiting for acks (a revocation); yield to it. Ordering: marked as a waiter
    // before the next try, so that a fast path acquiring after this mark releases at once.
    ks.waiters.fetch_add(1, std::memory_order_seq_cst);
    while (!try_acquire(ks, id)) sys::sched_yield();
    ks.waiters.fetch_sub(1, std::memory_order_seq_cst);
  }
  // Ordering: the bias is revoked after `lock` is held, so that its thread cannot take it back
  // (only a holder of `lock` biases it).
  revoke_bias(ks, id);
}

// Biased locking (acquire_fast, engine_internal.h, takes the biased case; this the rest). The
// biased thread marks itself busy and reads the bias again with no locked
// instruction between (a compiler barrier only); a revoker clears the bias and then runs
// membarrier(), which puts a full barrier into every running thread of the process. So either
// the biased thread's second read sees the bias gone, or its busy mark is visible to the revoker
// once membarrier returns, and the revoker waits for it to clear.
bool KeyLock::acquire_unbiased(KeyState &ks, int id, bool may_bias) {
  constexpr int32_t kBiasAfter = 64;  // uncontended acquisitions in a row before the lock is biased
  if (!try_acquire(ks, id)) return false;
  // Ordering: `lock` is taken before the bias and the waiters are read (a biasing thread held
  // it; KeyLock::wait_acquire marks itself a waiter first).
  int32_t b = ks.bias.load(std::memory_order_relaxed);
  if ((b != 0 && b != id) || ks.waiters.load(std::memory_order_seq_cst) != 0) {
    release(ks);
    return false;
  }
  if (b == 0 && may_bias) {
    if (ks.streak_id != id) {
      ks.streak_id = id;
      ks.streak = 0;
    } else if (++ks.streak >= kBiasAfter) {
      ks.bias.store(id, std::memory_order_relaxed);
      bump(stats().lock_biases);
    }
  }
  return true;
}

void KeyLock::revoke_bias(KeyState &ks, int id) {
  ks.streak = 0;
  int32_t b = ks.bias.load(std::memory_order_relaxed);
  // The caller's own bias stays: its fast paths do not run while it is here (a program signal
  // handler takes the slow path).
  if (b == 0 || b == id) return;
  ks.bias.store(0, std::memory_order_seq_cst);
  sys::membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
  bump(stats().bias_revocations);
  while (ks.bias_busy.load(std::memory_order_acquire)) sys::sched_yield();
}

KeyLock::~KeyLock() {
  if (owned_) release(*ks_);
}

void publish_rights(EngineState &st, int key, Rights r) {
  st.keys[key].rights.store(static_cast<uint8_t>(r), std::memory_order_seq_cst);
}

void publish_view(EngineState &st, PageGroup &g) {
  constexpr auto rel = std::memory_order_relaxed;
  int k = g.hw_key;
  KeyState &ks = st.keys[k];
  ks.group.store(&g, rel);
  ks.vkey.store(g.vkey, rel);
  ks.start.store(g.nranges == 1 ? g.ranges[0].start : 0, rel);
  ks.len.store(g.nranges == 1 ? g.ranges[0].len : 0, rel);
  ks.fast.store(!g.isolate && !g.nexcepts, rel);
  st.by_vkey[hint_of_vkey(g.vkey)].store(static_cast<uint8_t>(k), std::memory_order_release);
  if (g.nranges == 1) st.by_start[hint_of_start(g.ranges[0].start)].store(static_cast<uint8_t>(k), std::memory_order_release);
}

void clear_view(KeyState &ks) {
  constexpr auto rel = std::memory_order_relaxed;
  ks.group.store(nullptr, rel);
  ks.vkey.store(-1, rel);
  ks.start.store(0, rel);
  ks.len.store(0, rel);
  ks.fast.store(false, rel);
  ks.pins.store(0, rel);
}

// Applies prot with key to every range of g. Returns 0 or -errno (first failure).
namespace {
int tag(uintptr_t start, size_t len, int prot, int key) {
  void *a = reinterpret_cast<void *>(start);
  int rc = key_mprotect(a, len, prot, key);
  // Exactly PROT_EXEC on key 0 is what a plain mprotect makes execute-only (the kernel's own
  // key): once the pages are off our key, a plain mprotect gives them exactly that.
  if (!rc && key == 0 && prot == PROT_EXEC) rc = sys::mprotect(a, len, prot);
  return rc;
}
}  // namespace

int tag_ranges(const PageGroup &g, int prot, int key) {
  int rc = 0;
  g.for_each_tagged([&](uintptr_t start, size_t len) {
    if (!rc) rc = tag(start, len, prot, key);
  });
  return rc;
}

int fold_excepts(EngineState &st, PageGroup &g) {
  if (!g.nexcepts) return 0;
  KeyLock kl(st, g.hw_key);
  int prot = g.hw_key ? g.page_prot() : g.prot;
  // Keyed exceptions stay on their keys (the caller set their permission).
  for (int i = 0; i < g.nexcepts;) {
    if (g.keyed[i]) {
      ++i;
      continue;
    }
    if (int rc = tag(g.excepts[i].start, g.excepts[i].len, prot, g.hw_key)) return rc;
    g.drop_except(i);
  }
  if (g.hw_key) publish_view(st, g);  // without exceptions the fast paths may serve it again
  return 0;
}

// Moves a resident group back to key 0, its pages at exactly its process-wide prot.
// Ordering: the page table takes over first; only then may the key's rights change.
int unload(EngineState &st, PageGroup &g, bool retag) {
  int k = g.hw_key;
  KeyLock kl(st, k);
  if (retag) {
    if (int rc = tag_ranges(g, g.prot, 0)) return rc;
  }
  // Domains on the group end with its residency: they cannot be expressed in the page table.
  st.threads.for_each_live([&](ThreadRecord &r) {
    r.dom[k].store(0, std::memory_order_relaxed);
    r.iso[k].store(0, std::memory_order_relaxed);
  });
  st.eager_mask.fetch_and(~(1u << k), std::memory_order_seq_cst);
  clear_view(st.keys[k]);
  st.cache.release(k);
  // Threads keep what they hold on k (and stay among its holders) until the key is loaded again:
  // no page carries it now, and load() syncs every holder before any page does.
  publish_rights(st, k, Rights::kNone);
  g.hw_key = 0;
  region_update(g.stat_slot, 0, g.prot, g.ceiling);
  return 0;
}

int take_new_key(EngineState &st) {
  if (st.keys_taken >= st.key_budget) return 0;
  int k = key_alloc(0, PKEY_DISABLE_ACCESS);
  if (k <= 0) return 0;  // other pkey users hold the rest
  ++st.keys_taken;
  publish_rights(st, k, Rights::kNone);
  // Threads the engine has not synced yet may hold anything on a key it never used: they are
  // noted as its holders (register_unknown) until their first sync.
  st.cache.make_available(k);
  st.managed_mask.fetch_or(1u << k, std::memory_order_seq_cst);
  if (!(g_managed_keys.load(std::memory_order_relaxed) & (1u << k))) {
    RootsWrite w;
    g_managed_keys.fetch_or(1u << k, std::memory_order_seq_cst);
  }
  stats_page().hw_keys.store(st.keys_taken, std::memory_order_relaxed);
  return k;
}

// Loads g into a hardware key. Returns the key, or 0 (no key could be had, or a thread could not
// be synchronized: the group then stays in the page table, still exact).
int load(EngineState &st, PageGroup &g, bool may_evict, ThreadRecord *self) {
  int k = st.cache.find_free();
  if (!k) k = take_new_key(st);
  if (!k && may_evict) {
    // Keys a fast path used since the last choice count as used now; pinned keys (open domains)
    // are never chosen.
    uint32_t pinned = 0;
    for (int j = 1; j < kHwKeys; ++j) {
      KeyState &ks = st.keys[j];
      if (ks.referenced.load(std::memory_order_relaxed)) {
        ks.referenced.store(0, std::memory_order_relaxed);
        if (st.cache.owner(j)) st.cache.touch(j, ++st.tick);
      }
      if (ks.pins.load(std::memory_order_relaxed)) pinned |= 1u << j;
    }
    // A fast path may pin the chosen key (mpk_begin takes only the key's lock) before this takes
    // the key's lock: that key is passed over and another one chosen.
    while ((k = st.cache.pick_victim(pinned)) != 0) {
      PageGroup &victim = *st.cache.owner(k);
      KeyLock kl(st, k);
      if (st.keys[k].pins.load(std::memory_order_relaxed)) {
        pinned |= 1u << k;
        continue;
      }
      if (unload(st, victim) != 0) return 0;
      bump(stats().evictions);
      break;
    }
  }
  if (!k) return 0;
  KeyLock kl(st, k);
  // Every thread must hold no more than the group's rights on k (exactly them for eager keys)
  // before any page carries k.
  if (g.eager) st.eager_mask.fetch_or(1u << k, std::memory_order_seq_cst);
  publish_rights(st, k, rights_of(g.prot));
  if (!sync_keys(st, 1u << k, self)) {
    st.eager_mask.fetch_and(~(1u << k), std::memory_order_seq_cst);
    publish_rights(st, k, Rights::kNone);
    return 0;
  }
  st.cache.assign(k, &g, ++st.tick);
  g.hw_key = k;
  if (tag_ranges(g, g.page_prot(), k) != 0) {
    // Splitting VMAs can fail for lack of memory: put every range back in the page table.
    g.hw_key = 0;
    tag_ranges(g, g.prot, 0);
    st.cache.release(k);
    st.eager_mask.fetch_and(~(1u << k), std::memory_order_seq_cst);
    publish_rights(st, k, Rights::kNone);
    return 0;
  }
  publish_view(st, g);
  bump(stats().loads);
  region_update(g.stat_slot, k, g.prot, g.ceiling);
  return k;
}

PageGroup *new_group(EngineState &st, int vkey) {
  auto *g = static_cast<PageGroup *>(g_arena.alloc(sizeof(PageGroup)));
  if (!g) return nullptr;
  new (g) PageGroup();
  g->vkey = vkey;
  if (!st.groups.insert(vkey, g)) {
    g_arena.free(g, sizeof(PageGroup));
    return nullptr;
  }
  return g;
}

void delete_group(EngineState &st, PageGroup *g) {
  st.groups.erase(g->vkey);
  if (g->heap) {
    g->heap->destroy();
    g_arena.free(g->heap, sizeof(Heap));
  }
  if (g->ranges) g_arena.free(g->ranges, g->cap_ranges * sizeof(Range));
  g_arena.free(g, sizeof(PageGroup));
}

// Adds fresh pages [p, p+len) (currently PROT_NONE on key 0) to g at the group's current state,
// raising the ceiling to include prot. Returns 0 or -errno; on failure the pages are untouched.
int adopt_pages(EngineState &st, PageGroup &g, void *p, size_t len, int prot) {
  KeyLock kl(st, g.hw_key);  // the fast paths read the ceiling and the ranges
  int old_ceiling = g.ceiling;
  g.ceiling |= prot;
  if (g.hw_key && g.ceiling != old_ceiling) {
    int rc = tag_ranges(g, g.page_prot(), g.hw_key);
    if (rc) {
      g.ceiling = old_ceiling;
      tag_ranges(g, g.page_prot(), g.hw_key);
      return rc;
    }
  }
  int rc = g.hw_key ? key_mprotect(p, len, g.page_prot(), g.hw_key) : key_mprotect(p, len, g.prot, 0);
  if (rc == 0) {
    if (g.hw_key) {
      if (!g.add_range(g_arena, reinterpret_cast<uintptr_t>(p), len)) rc = -ENOMEM;
      publish_view(st, g);  // the fast paths' range view
    } else if (!g.add_range(g_arena, reinterpret_cast<uintptr_t>(p), len)) {
      rc = -ENOMEM;
    }
  }
  if (rc) {
    g.ceiling = old_ceiling;
    if (g.hw_key) tag_ranges(g, g.page_prot(), g.hw_key);
    return rc;
  }
  return 0;
}

void demote_key(EngineState &st, int k) {
  Section s(st);
  Locked l;
  KeyLock kl(st, k);
  if (PageGroup *g = st.keys[k].group.load(std::memory_order_relaxed)) {
    MPK_LOG(kInfo, "vkey %d: a thread could not be synchronized; group moves to the page table", g->vkey);
    unload(st, *g);
  }
}

// Gives g the process-wide permission prot (within its ceiling): by PKRU when resident, else
// by the page table (loading the group into a key when the cache and the eviction rate allow).
// The caller's own PKRU follows on its way out (s.grant).
int set_group_prot(EngineState &st, PageGroup &g_, int prot, Section &s) {
  PageGroup *g = &g_;
  KeyLock kl(st, g->hw_key);  // a resident group's permission is shared with the fast paths
  int old = g->prot;
  if (int k = g->hw_key) {
    bump_hot(Hot::cache_hits);
    bump_hot(Hot::mprotect_by_pkru);
    int old_page = g->page_prot();
    g->prot = prot;
    st.cache.touch(k, ++st.tick);
    if (g->page_prot() != old_page) {
      if (int rc = tag_ranges(*g, g->page_prot(), k)) {
        g->prot = old;
        return rc;
      }
    }
    s.grant |= 1u << k;
    if (rights_of(old) != rights_of(prot)) {
      publish_rights(st, k, rights_of(prot));
      // A lazy grant signals nobody (sync_keys finds no holder with more than the new rights);
      // the others catch up on their next access.
      if (!sync_keys(st, 1u << k, s.rec)) {
        // A thread could not take the change: the page table enforces prot for everyone instead.
        MPK_LOG(kInfo, "vkey %d: a thread could not be synchronized; group moves to the page table", g->vkey);
        unload(st, *g);
      }
    }
    return 0;
  }
  bump(stats().cache_misses);
  g->prot = prot;
  bool try_load = st.cache.find_free() || st.keys_taken < st.key_budget;
  if (!try_load) {
    st.evict_credit += st.evict_rate;
    if (st.evict_credit >= 100) {
      st.evict_credit -= 100;
      try_load = true;
    }
  }
  if (try_load) {
    if (int k = load(st, *g, /*may_evict=*/true, s.rec)) {
      s.grant |= 1u << k;
      bump_hot(Hot::mprotect_by_pkru);
      return 0;
    }
  }
  bump(stats().mprotect_by_page_table);
  if (int rc = tag_ranges(*g, prot, 0)) {
    g->prot = old;
    tag_ranges(*g, old, 0);
    return rc;
  }
  return 0;
}

}  // namespace mpk

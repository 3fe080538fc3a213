// engine_core.cc - the engine's shared machinery: entering and leaving, loading and unloading keys,
// group lifetime. The public operations (engine.cc) and the legacy mprotect emulation (legacy.cc)
// are built from these.
#include "engine_internal.h"

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

constinit MetaArena g_arena;
constinit std::atomic<EngineState *> g_state{nullptr};
constinit pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
constinit int g_meta_key = 0;
constinit uint32_t g_meta_mask = 0;
constinit std::atomic<uint32_t> g_managed_keys{0};
constinit std::atomic<int> g_sync_signal{0};
thread_local ThreadRecord *t_self __attribute__((tls_model("initial-exec"))) = nullptr;

// The calling thread's record, registering it if it arrived some way we did not see.
ThreadRecord *self_record(EngineState &st) {
  if (t_self) return t_self;
  ThreadRecord *r = st.threads.find(sys::gettid());
  if (!r) {
    r = st.threads.add(sys::gettid());
    if (r) bump(stats().threads_registered);
  }
  t_self = r;
  return r;
}

// Leaves the engine: write this thread's PKRU from the state, metadata back to write-disabled.
// Ordering: shadow and in_lib are stored before gen is re-read; revokers bump gen before they read
// shadow and in_lib. So either a revoker sees us outside with our shadow (and signals us if it is
// stale), or we see its gen and go round again. Both sides are seq_cst.
void leave(EngineState &st, ThreadRecord *rec) {
  if (!rec) {
    wrpkru(outside_meta(compute_pkru(st, rdpkru(), nullptr)));
    return;
  }
  if (rec->in_lib.load(std::memory_order_relaxed) > 1) {
    rec->in_lib.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  for (;;) {
    uint64_t g1 = st.gen.load(std::memory_order_seq_cst);
    uint32_t v = outside_meta(compute_pkru(st, rdpkru(), rec));
    // Inside a program's signal handler the interrupted context resumes later with its own PKRU:
    // the shadow may then only grow.
    note_shadow(st, rec, v, /*may_lower=*/t_handler_depth == 0);
    rec->in_lib.store(0, std::memory_order_seq_cst);  // the StoreLoad fence before gen is re-read
    wrpkru(v);
    if (st.gen.load(std::memory_order_seq_cst) == g1) return;
    wrpkru(inside_meta(v));
    rec->in_lib.store(1, std::memory_order_seq_cst);
  }
}


void publish_rights(EngineState &st, int key, Rights r) {
  st.key_rights[key].store(static_cast<uint8_t>(r), std::memory_order_seq_cst);
}
void bump_gen(EngineState &st) { st.gen.fetch_add(1, std::memory_order_seq_cst); }

// Applies prot with key to every range of g. Returns 0 or -errno (first failure).
int tag_ranges(const PageGroup &g, int prot, int key) {
  for (uint32_t i = 0; i < g.nranges; ++i) {
    void *a = reinterpret_cast<void *>(g.ranges[i].start);
    int rc = key_mprotect(a, g.ranges[i].len, prot, key);
    // Exactly PROT_EXEC on key 0 is what a plain mprotect makes execute-only (the kernel's own
    // key): once the pages are off our key, a plain mprotect gives them exactly that.
    if (!rc && key == 0 && prot == PROT_EXEC) rc = sys::mprotect(a, g.ranges[i].len, prot);
    if (rc) return rc;
  }
  return 0;
}

// Moves a resident group back to key 0, its pages at exactly its process-wide prot.
// Ordering: the page table takes over first; only then may the key's rights change.
int unload(EngineState &st, PageGroup &g, bool retag) {
  int k = g.hw_key;
  if (retag) {
    if (int rc = tag_ranges(g, g.prot, 0)) return rc;
  }
  // Domains on the group end with its residency: they cannot be expressed in the page table.
  st.threads.for_each_live([&](ThreadRecord &r) {
    r.dom[k].store(0, std::memory_order_relaxed);
    r.iso[k].store(0, std::memory_order_relaxed);
  });
  st.eager_mask.fetch_and(~(1u << k), std::memory_order_seq_cst);
  st.cache.release(k);
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
  st.cache.make_available(k);
  st.managed_mask.fetch_or(1u << k, std::memory_order_seq_cst);
  g_managed_keys.fetch_or(1u << k, std::memory_order_seq_cst);
  stats_page().hw_keys.store(st.keys_taken, std::memory_order_relaxed);
  return k;
}

// Loads g into a hardware key. Returns the key, or 0 (no key could be had, or a thread could not
// be synchronized: the group then stays in the page table, still exact).
int load(EngineState &st, PageGroup &g, bool may_evict, ThreadRecord *self) {
  int k = st.cache.find_free();
  if (!k) k = take_new_key(st);
  if (!k && may_evict) {
    k = st.cache.pick_victim();
    if (k) {
      PageGroup &victim = *st.cache.owner(k);
      if (unload(st, victim) != 0) return 0;
      bump(stats().evictions);
    }
  }
  if (!k) return 0;
  // Every thread must hold the group's rights on k before any page carries k.
  publish_rights(st, k, rights_of(g.prot));
  bump_gen(st);
  if (!sync_keys(st, 1u << k, self)) {
    publish_rights(st, k, Rights::kNone);
    bump_gen(st);
    return 0;
  }
  st.cache.assign(k, &g, ++st.tick);
  g.hw_key = k;
  if (g.eager) st.eager_mask.fetch_or(1u << k, std::memory_order_seq_cst);
  if (tag_ranges(g, g.page_prot(), k) != 0) {
    // Splitting VMAs can fail for lack of memory: put every range back in the page table.
    g.hw_key = 0;
    tag_ranges(g, g.prot, 0);
    st.cache.release(k);
    publish_rights(st, k, Rights::kNone);
    bump_gen(st);
    return 0;
  }
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
  if (rc == 0 && !g.add_range(g_arena, reinterpret_cast<uintptr_t>(p), len)) rc = -ENOMEM;
  if (rc) {
    g.ceiling = old_ceiling;
    if (g.hw_key) tag_ranges(g, g.page_prot(), g.hw_key);
    return rc;
  }
  (void)st;
  return 0;
}

// Gives g the process-wide permission prot (within its ceiling): by PKRU when resident, else
// by the page table (loading the group into a key when the cache and the eviction rate allow).
int set_group_prot(EngineState &st, PageGroup &g_, int prot, ThreadRecord *self) {
  PageGroup *g = &g_;
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
    if (rights_of(old) != rights_of(prot)) {
      publish_rights(st, k, rights_of(prot));
      bump_gen(st);
      // A lazy grant signals nobody: no thread can hold more than the new rights, and the others
      // catch up on their next access. Skipping the scan of the registry is the point.
      bool lazy_grant = rights_of(prot) > rights_of(old) && st.lazy_grants &&
                        !(st.eager_mask.load(std::memory_order_acquire) & (1u << k));
      if (!lazy_grant && !sync_keys(st, 1u << k, self)) {
        // A thread could not take the change: the page table enforces prot for everyone instead.
        MPK_LOG(kInfo, "vkey %d: a thread could not be synchronized; group moves to the page table", g->vkey);
        unload(st, *g);
        bump_gen(st);
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
  if (try_load && load(st, *g, /*may_evict=*/true, self)) {
    bump_hot(Hot::mprotect_by_pkru);
    return 0;
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

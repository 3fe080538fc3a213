#include "engine.h"

#include <sys/mman.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <new>

#include "engine_state.h"
#include "heap.h"
#include "page_group.h"
#include "raw_log.h"
#include "stats.h"
#include "sync.h"
#include "sys.h"

namespace mpk {

constinit MetaArena g_arena;
constinit std::atomic<EngineState *> g_state{nullptr};
constinit pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
constinit int g_meta_key = 0;
constinit uint32_t g_meta_mask = 0;
thread_local ThreadRecord *t_self __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

constinit pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;
constexpr int kDataProt = PROT_READ | PROT_WRITE;
constexpr int kAllProt = PROT_READ | PROT_WRITE | PROT_EXEC;

EngineState *state() { return g_state.load(std::memory_order_acquire); }

// The calling thread's record, registering it if it arrived some way we did not see.
ThreadRecord *self_record(EngineState &st) {
  if (t_self) return t_self;
  ThreadRecord *r = st.threads.find(sys::gettid());
  if (!r) {
    r = st.threads.add(sys::gettid());
    if (r) bump(g_stats.threads_registered);
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
    rec->shadow.store(v, std::memory_order_release);
    rec->shadow_known.store(true, std::memory_order_release);
    rec->in_lib.store(0, std::memory_order_seq_cst);  // the StoreLoad fence before gen is re-read
    wrpkru(v);
    if (st.gen.load(std::memory_order_seq_cst) == g1) return;
    wrpkru(inside_meta(v));
    rec->in_lib.store(1, std::memory_order_seq_cst);
  }
}

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

bool valid_prot(int prot) { return (prot & ~kAllProt) == 0; }

void publish_rights(EngineState &st, int key, Rights r) {
  st.key_rights[key].store(static_cast<uint8_t>(r), std::memory_order_seq_cst);
}
void bump_gen(EngineState &st) { st.gen.fetch_add(1, std::memory_order_seq_cst); }

// Applies prot with key to every range of g. Returns 0 or -errno (first failure).
int tag_ranges(const PageGroup &g, int prot, int key) {
  for (uint32_t i = 0; i < g.nranges; ++i) {
    int rc = sys::pkey_mprotect(reinterpret_cast<void *>(g.ranges[i].start), g.ranges[i].len, prot, key);
    if (rc) return rc;
  }
  return 0;
}

// Moves a resident group back to key 0, its pages at exactly its process-wide prot.
// Ordering: the page table takes over first; only then may the key's rights change.
int unload(EngineState &st, PageGroup &g) {
  int k = g.hw_key;
  int rc = tag_ranges(g, g.prot, 0);
  if (rc) return rc;
  // Domains on the group end with its residency: they cannot be expressed in the page table.
  st.threads.for_each_live([&](ThreadRecord &r) { r.dom[k].store(0, std::memory_order_relaxed); });
  st.cache.release(k);
  publish_rights(st, k, Rights::kNone);
  g.hw_key = 0;
  return 0;
}

int take_new_key(EngineState &st) {
  if (st.keys_taken >= st.key_budget) return 0;
  int k = sys::pkey_alloc(0, PKEY_DISABLE_ACCESS);
  if (k <= 0) return 0;  // other pkey users hold the rest
  ++st.keys_taken;
  publish_rights(st, k, Rights::kNone);
  st.cache.make_available(k);
  st.managed_mask.fetch_or(1u << k, std::memory_order_seq_cst);
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
      bump(g_stats.evictions);
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
  if (tag_ranges(g, g.page_prot(), k) != 0) {
    // Splitting VMAs can fail for lack of memory: put every range back in the page table.
    g.hw_key = 0;
    tag_ranges(g, g.prot, 0);
    st.cache.release(k);
    publish_rights(st, k, Rights::kNone);
    bump_gen(st);
    return 0;
  }
  bump(g_stats.loads);
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
  int rc = g.hw_key ? sys::pkey_mprotect(p, len, g.page_prot(), g.hw_key) : sys::pkey_mprotect(p, len, g.prot, 0);
  if (rc == 0 && !g.add_range(g_arena, reinterpret_cast<uintptr_t>(p), len)) rc = -ENOMEM;
  if (rc) {
    g.ceiling = old_ceiling;
    if (g.hw_key) tag_ranges(g, g.page_prot(), g.hw_key);
    return rc;
  }
  (void)st;
  return 0;
}

// Heap page source: 64 KiB-aligned group memory.
struct HeapCtx {
  EngineState *st;
  PageGroup *g;
};
void *heap_map(void *ctx, size_t bytes) {
  auto *c = static_cast<HeapCtx *>(ctx);
  size_t over = bytes + Heap::kSpanSize;
  void *raw = sys::mmap(nullptr, over, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (sys::mmap_failed(raw)) return nullptr;
  uintptr_t a = reinterpret_cast<uintptr_t>(raw);
  uintptr_t aligned = (a + Heap::kSpanSize - 1) & ~(Heap::kSpanSize - 1);
  if (aligned > a) sys::munmap(raw, aligned - a);
  uintptr_t end = a + over, want_end = aligned + bytes;
  if (end > want_end) sys::munmap(reinterpret_cast<void *>(want_end), end - want_end);
  void *p = reinterpret_cast<void *>(aligned);
  if (adopt_pages(*c->st, *c->g, p, bytes, kDataProt) != 0) {
    sys::munmap(p, bytes);
    return nullptr;
  }
  return p;
}
void heap_unmap(void *ctx, void *p, size_t bytes) {
  auto *c = static_cast<HeapCtx *>(ctx);
  c->g->remove_span(g_arena, reinterpret_cast<uintptr_t>(p), bytes);
  sys::munmap(p, bytes);
}

int parse_env_int(const char *name, int def, int lo, int hi) {
  const char *v = getenv(name);
  if (!v || !*v) return def;
  char *end;
  long x = strtol(v, &end, 10);
  if (*end || x < lo || x > hi) {
    MPK_LOG(kWarn, "%s=%s is not a number in %d..%d; using %d", name, v, lo, hi, def);
    return def;
  }
  return static_cast<int>(x);
}

void configure_logging() {
  const char *lv = getenv("MPK_LOG");
  LogLevel level = LogLevel::kWarn;
  if (lv) {
    if (!__builtin_strcmp(lv, "error")) level = LogLevel::kError;
    else if (!__builtin_strcmp(lv, "info")) level = LogLevel::kInfo;
    else if (!__builtin_strcmp(lv, "debug")) level = LogLevel::kDebug;
  }
  log_configure(level, 2);
}

// fork: the child has one thread. The forking thread holds the lock across fork (inside the
// engine, like a Section) so the child inherits a consistent state; both sides leave through
// leave(), which writes their PKRU from the state.
void atfork_prepare() {
  EngineState *st = state();
  if (!st) return;
  wrpkru(inside_meta(rdpkru()));
  if (ThreadRecord *rec = self_record(*st)) rec->in_lib.fetch_add(1, std::memory_order_seq_cst);
  pthread_mutex_lock(&g_lock);
}
void atfork_parent() {
  EngineState *st = state();
  if (!st) return;
  pthread_mutex_unlock(&g_lock);
  leave(*st, t_self);
}
void atfork_child() {
  EngineState *st = state();
  if (!st) return;
  ThreadRecord *self = t_self;
  st->threads.for_each_live([&](ThreadRecord &r) {
    if (&r != self) reap_thread(*st, &r);
  });
  if (self) self->tid.store(sys::gettid(), std::memory_order_seq_cst);
  sync_after_fork(*st);
  pthread_mutex_unlock(&g_lock);
  leave(*st, self);
}

void thread_exit_destructor(void *) { engine_thread_exit(); }

}  // namespace

bool engine_ready() { return state() != nullptr; }

int engine_init(int evict_rate) {
  if (evict_rate < 0 || evict_rate > 100) return -EINVAL;
  pthread_mutex_lock(&g_init_lock);
  if (EngineState *st = state()) {
    // A second call keeps every group and only updates the eviction rate.
    {
      Section s(*st);
      Locked l;
      st->evict_rate = evict_rate;
    }
    pthread_mutex_unlock(&g_init_lock);
    return 0;
  }
  configure_logging();
  if (!pkeys_usable()) {
    pthread_mutex_unlock(&g_init_lock);
    MPK_LOG(kInfo, "protection keys unavailable (CPU PKU %d, OS %d, pkey_alloc %d)", cpu_info().pku,
            cpu_info().ospke, cpu_info().pkey_syscalls);
    return -ENOTSUP;
  }
  int meta = sys::pkey_alloc(0, 0);  // this thread: read/write until it leaves the engine
  if (meta <= 0) {
    pthread_mutex_unlock(&g_init_lock);
    MPK_LOG(kError, "cannot allocate the metadata key: %d", meta);
    return meta == -ENOSPC ? -ENOSPC : -ENOTSUP;
  }
  if (!g_arena.init(meta)) {
    sys::pkey_free(meta);
    pthread_mutex_unlock(&g_init_lock);
    return -ENOMEM;
  }
  g_meta_key = meta;
  g_meta_mask = pkru_mask(meta);
  auto *st = new (g_arena.alloc(sizeof(EngineState))) EngineState(&g_arena);
  // Leave keys for other pkey users: by default at least one besides the metadata key.
  st->key_budget = parse_env_int("MPK_KEY_BUDGET", 13, 1, 14);
  st->evict_rate = evict_rate;
  st->sync_signal = parse_env_int("MPK_SYNC_SIGNAL", SIGRTMAX - 2, SIGRTMIN, SIGRTMAX);
  int rc = 0;
  if (!st->threads.init(g_arena)) rc = -ENOMEM;
  if (!rc) rc = sync_install(*st);
  if (!rc) rc = -pthread_key_create(&st->exit_key, thread_exit_destructor);
  if (rc) {
    g_meta_key = 0;
    g_meta_mask = 0;
    pthread_mutex_unlock(&g_init_lock);
    return rc;
  }
  // Threads that exist already are adopted from /proc; their PKRU is unknown until their first
  // sync, so every sync signals them until then.
  t_self = st->threads.add(sys::gettid());
  st->threads.adopt_all_tasks();
  pthread_setspecific(st->exit_key, t_self);
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
  g_state.store(st, std::memory_order_release);
  leave(*st, t_self ? (t_self->in_lib.store(1), t_self) : nullptr);
  pthread_mutex_unlock(&g_init_lock);
  MPK_LOG(kInfo, "ready: metadata key %d, up to %d group keys, sync signal %d, membarrier %d", meta,
          st->key_budget, st->sync_signal, st->membarrier_ok);
  return 0;
}

void *engine_mmap(int vkey, void *addr, size_t len, int prot, int flags, int fd, off_t off, int *err) {
  EngineState *st = state();
  if (!st) return *err = EPERM, nullptr;
  if (vkey < 0 || len == 0 || !valid_prot(prot)) return *err = EINVAL, nullptr;
  Section s(*st);
  Locked l;
  bool created = false;
  PageGroup *g = st->groups.find(vkey);
  if (!g) {
    g = new_group(*st, vkey);
    if (!g) return *err = ENOMEM, nullptr;
    created = true;
  }
  // Map inaccessible first, then give the pages the group's state: no thread can see them between.
  void *p = sys::mmap(addr, len, PROT_NONE, flags, fd, off);
  if (sys::mmap_failed(p)) {
    if (created) delete_group(*st, g);
    return *err = -static_cast<int>(reinterpret_cast<long>(p)), nullptr;
  }
  size_t rounded = (len + 4095) & ~size_t{4095};
  if (flags & MAP_FIXED) {
    // The new mapping replaced whatever was there: drop those pages from every group.
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    st->groups.for_each([&](PageGroup *other) {
      if (other->overlaps(a, rounded)) other->remove_span(g_arena, a, rounded);
    });
  }
  int rc = adopt_pages(*st, *g, p, rounded, prot);
  if (rc) {
    sys::munmap(p, rounded);
    if (created) delete_group(*st, g);
    return *err = -rc, nullptr;
  }
  if (created && !g->hw_key) load(*st, *g, /*may_evict=*/false, s.rec);
  return p;
}

int engine_munmap(int vkey) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (vkey < 0) return -EINVAL;
  Section s(*st);
  Locked l;
  PageGroup *g = st->groups.find(vkey);
  if (!g) return -EINVAL;
  // Ordering: unmap before the key is released. Once released, the key can be given to another
  // group, and a page still carrying it would fall under that group's rights.
  for (uint32_t i = 0; i < g->nranges; ++i)
    sys::munmap(reinterpret_cast<void *>(g->ranges[i].start), g->ranges[i].len);
  if (int k = g->hw_key) {
    st->threads.for_each_live([&](ThreadRecord &r) { r.dom[k].store(0, std::memory_order_relaxed); });
    st->cache.release(k);
    publish_rights(*st, k, Rights::kNone);
    bump_gen(*st);
    // No page carries k now. A thread that cannot be reached keeps a stale shadow and is signalled
    // again before k is given to another group (load() syncs k first).
    sync_keys(*st, 1u << k, s.rec);
  }
  delete_group(*st, g);
  return 0;
}

int engine_begin(int vkey, int prot) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (vkey < 0 || (prot & ~kDataProt)) return -EINVAL;
  Section s(*st);
  if (!s.rec) return -ENOMEM;
  Locked l;
  PageGroup *g = st->groups.find(vkey);
  if (!g) return -EINVAL;
  if (!within_ceiling(prot, g->ceiling)) return -EACCES;
  bump(g_stats.begin_calls);
  int k = g->hw_key;
  if (k) {
    bump(g_stats.cache_hits);
  } else {
    bump(g_stats.cache_misses);
    k = load(*st, *g, /*may_evict=*/true, s.rec);
    if (!k) return -EBUSY;
  }
  if (!s.rec->dom[k].load(std::memory_order_relaxed)) st->cache.pin(k);
  s.rec->dom[k].store(static_cast<uint8_t>(rights_of(prot)) + 1, std::memory_order_release);
  st->cache.touch(k, ++st->tick);
  return 0;
}

int engine_end(int vkey) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (vkey < 0) return -EINVAL;
  Section s(*st);
  if (!s.rec) return -ENOMEM;
  Locked l;
  PageGroup *g = st->groups.find(vkey);
  if (!g) return -EINVAL;
  int k = g->hw_key;
  if (!k || !s.rec->dom[k].load(std::memory_order_relaxed)) return -EINVAL;  // no open domain
  bump(g_stats.end_calls);
  s.rec->dom[k].store(0, std::memory_order_release);
  st->cache.unpin(k);
  return 0;
}

int engine_mprotect(int vkey, int prot) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (vkey < 0 || !valid_prot(prot)) return -EINVAL;
  Section s(*st);
  Locked l;
  PageGroup *g = st->groups.find(vkey);
  if (!g) return -EINVAL;
  if (!within_ceiling(prot, g->ceiling)) return -EACCES;
  bump(g_stats.mprotect_calls);
  int old = g->prot;
  if (int k = g->hw_key) {
    bump(g_stats.cache_hits);
    bump(g_stats.mprotect_by_pkru);
    g->prot = prot;
    st->cache.touch(k, ++st->tick);
    if ((old ^ prot) & PROT_EXEC) {
      if (int rc = tag_ranges(*g, g->page_prot(), k)) {
        g->prot = old;
        return rc;
      }
    }
    if (rights_of(old) != rights_of(prot)) {
      publish_rights(*st, k, rights_of(prot));
      bump_gen(*st);
      if (!sync_keys(*st, 1u << k, s.rec)) {
        // A thread could not take the change: the page table enforces prot for everyone instead.
        MPK_LOG(kInfo, "vkey %d: a thread could not be synchronized; group moves to the page table", vkey);
        unload(*st, *g);
        bump_gen(*st);
      }
    }
    return 0;
  }
  bump(g_stats.cache_misses);
  g->prot = prot;
  bool try_load = st->cache.find_free() || st->keys_taken < st->key_budget;
  if (!try_load) {
    st->evict_credit += st->evict_rate;
    if (st->evict_credit >= 100) {
      st->evict_credit -= 100;
      try_load = true;
    }
  }
  if (try_load && load(*st, *g, /*may_evict=*/true, s.rec)) {
    bump(g_stats.mprotect_by_pkru);
    return 0;
  }
  bump(g_stats.mprotect_by_page_table);
  if (int rc = tag_ranges(*g, prot, 0)) {
    g->prot = old;
    tag_ranges(*g, old, 0);
    return rc;
  }
  return 0;
}

void *engine_malloc(int vkey, size_t size, int *err) {
  EngineState *st = state();
  if (!st) return *err = EPERM, nullptr;
  if (vkey < 0) return *err = EINVAL, nullptr;
  Section s(*st);
  Locked l;
  PageGroup *g = st->groups.find(vkey);
  if (!g) {
    g = new_group(*st, vkey);
    if (!g) return *err = ENOMEM, nullptr;
    g->ceiling = kDataProt;
    load(*st, *g, /*may_evict=*/false, s.rec);
  } else if (!within_ceiling(kDataProt, g->ceiling)) {
    return *err = EACCES, nullptr;
  }
  if (!g->heap) {
    void *mem = g_arena.alloc(sizeof(Heap) + sizeof(HeapCtx));
    if (!mem) return *err = ENOMEM, nullptr;
    auto *ctx = reinterpret_cast<HeapCtx *>(static_cast<char *>(mem) + sizeof(Heap));
    *ctx = HeapCtx{st, g};
    g->heap = new (mem) Heap(&g_arena, PageSource{heap_map, heap_unmap, ctx});
  }
  void *p = g->heap->alloc(size);
  if (!p) return *err = ENOMEM, nullptr;
  bump(g_stats.heap_allocs);
  return p;
}

int engine_free(int vkey, void *p) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (!p) return 0;
  Section s(*st);
  Locked l;
  bump(g_stats.heap_frees);
  PageGroup *g = vkey >= 0 ? st->groups.find(vkey) : nullptr;
  Heap::FreeResult r = g && g->heap ? g->heap->free(p) : Heap::FreeResult::kNotOurs;
  if (r == Heap::FreeResult::kOk) return 0;
  bump(g_stats.bad_frees);
  const char *why = !g ? "unknown vkey"
                    : r == Heap::FreeResult::kDoubleFree ? "double free"
                    : r == Heap::FreeResult::kNotABlock ? "not the start of a block"
                                                        : "not allocated from this group";
  MPK_LOG(kError, "mpk_free(%d, %p): %s; ignored", vkey, p, why);
  return -EINVAL;
}

void engine_thread_start() {
  EngineState *st = state();
  if (!st) return;
  // Register first, then compute the PKRU from the state (in leave()): a concurrent revocation
  // either finds this thread in the registry or is already in what it computes.
  Section s(*st);
  if (s.rec) {
    bump(g_stats.threads_registered);
    pthread_setspecific(st->exit_key, s.rec);
  }
}

void engine_thread_exit() {
  EngineState *st = state();
  if (!st) return;
  wrpkru(inside_meta(rdpkru()));
  ThreadRecord *rec = t_self;
  {
    Locked l;
    if (rec && rec->tid.load() == sys::gettid()) {
      bool had_domains = false;
      for (int k = 1; k < kHwKeys; ++k) had_domains |= rec->dom[k].load() != 0;
      reap_thread(*st, rec);
      if (had_domains) bump_gen(*st);
    }
    t_self = nullptr;
  }
  wrpkru(outside_meta(compute_pkru(*st, rdpkru(), nullptr)));
}

int engine_stats_json(char *buf, int cap) {
  EngineState *st = state();
  if (!st) return stats_json(buf, cap, 0, 0, 0);
  Section s(*st);
  Locked l;
  return stats_json(buf, cap, static_cast<int>(st->groups.size()), st->cache.resident_count(),
                    st->cache.available_count());
}

}  // namespace mpk

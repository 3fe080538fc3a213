#include "engine.h"

#include <sys/mman.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <new>

#include "engine_internal.h"
#include "fast_path.h"
#include "heap.h"
#include "isolation.h"
#include "libc_real.h"
#include "page_group.h"
#include "raw_log.h"
#include "self_check.h"
#include "stats.h"
#include "stats_page.h"
#include "sync.h"
#include "sys.h"

namespace mpk {

namespace {

constinit pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;
constinit int g_opt_key_budget = 0, g_opt_sync_signal = 0;  // engine_set_options(); 0: environment

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
  if (int k = c->g->hw_key) {
    KeyLock kl(*c->st, k);
    c->g->remove_span(g_arena, reinterpret_cast<uintptr_t>(p), bytes);
    publish_view(*c->st, *c->g);
  } else {
    c->g->remove_span(g_arena, reinterpret_cast<uintptr_t>(p), bytes);
  }
  sys::munmap(p, bytes);
}

// MPK_SIMULATE=1 (or "yes"/"true"): run on simulated keys whatever the CPU has.
bool simulation_requested() {
  const char *v = getenv("MPK_SIMULATE");
  if (!v || !*v || !__builtin_strcmp(v, "0")) return false;
  if (!__builtin_strcmp(v, "1") || !__builtin_strcmp(v, "yes") || !__builtin_strcmp(v, "true")) return true;
  MPK_LOG(kWarn, "MPK_SIMULATE=%s is not 0 or 1; not simulating", v);
  return false;
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
  log_configure(level, -1);  // the destination stays (the shim's policy may have chosen a file)
}

// fork: the child has one thread. The forking thread holds the lock and every key lock across
// fork (inside the engine, like a Section) so the child inherits a consistent state and no lock
// held by a thread it does not have; both sides leave through leave(), which writes their PKRU
// from the state.
void lock_all_keys(EngineState &st) {
  int id = lock_id(t_self);
  for (int k = 1; k < kHwKeys; ++k)
    KeyLock::wait_acquire(st.keys[k], id);
}
void unlock_all_keys(EngineState &st) {
  for (int k = 1; k < kHwKeys; ++k) KeyLock::release(st.keys[k]);
}
void atfork_prepare() {
  EngineState *st = state();
  if (!st) return;
  engine_enter();  // until the parent or child handler: the locks are held across fork
  wrpkru(inside_meta(rdpkru()));
  if (ThreadRecord *rec = self_record(*st)) rec->in_lib.fetch_add(1, std::memory_order_seq_cst);
  pthread_mutex_lock(&g_lock);
  lock_all_keys(*st);
  roots_fork_prepare();  // last: a roots writer never waits for the locks above
}
void atfork_parent() {
  EngineState *st = state();
  if (!st) return;
  roots_fork_parent();
  unlock_all_keys(*st);
  pthread_mutex_unlock(&g_lock);
  leave(*st, t_self, 0);
  engine_exit();
}
void atfork_child() {
  EngineState *st = state();
  if (!st) return;
  ThreadRecord *self = t_self;
  st->threads.for_each_live([&](ThreadRecord &r) {
    if (&r != self) reap_thread(*st, &r);
  });
  if (self) self->tid.store(sys::gettid(), std::memory_order_seq_cst);
  isolation_after_fork(*st, self);  // after the new tid: JIT write spans are keyed by it
  sync_after_fork(*st);
  stats_page_after_fork();
  roots_fork_child();
  unlock_all_keys(*st);
  pthread_mutex_unlock(&g_lock);
  leave(*st, self, 0);
  engine_exit();
}

void thread_exit_destructor(void *) { engine_thread_exit(); }

}  // namespace

void engine_set_options(int key_budget, int sync_signal) {
  if (key_budget >= 1 && key_budget <= 14) g_opt_key_budget = key_budget;
  if (sync_signal >= SIGRTMIN && sync_signal <= SIGRTMAX) g_opt_sync_signal = sync_signal;
}

void *engine_meta_copy(const void *src, size_t size, size_t used) {
  EngineState *st = state();
  if (!st) return nullptr;
  if (used > size) used = size;
  Section s(*st);
  Locked l;
  void *p = g_arena.alloc(size);  // zeroed, and untouched past what is copied
  if (p) __builtin_memcpy(p, src, used);
  return p;
}

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
  real_resolve_all();
  // The backend is chosen once, before any key exists (key_backend.h).
  if (simulation_requested()) {
    g_backend = Backend::kSimulated;
    MPK_LOG(kWarn, "MPK_SIMULATE=1: simulated protection keys; memory is NOT protected (for measurement only)");
  } else if (pkeys_usable()) {
    g_backend = Backend::kHardware;
  } else {
    pthread_mutex_unlock(&g_init_lock);
    MPK_LOG(kInfo, "protection keys unavailable (CPU PKU %d, OS %d, pkey_alloc %d)", cpu_info().pku,
            cpu_info().ospke, cpu_info().pkey_syscalls);
    return -ENOTSUP;
  }
  int meta = key_alloc(0, 0);  // this thread: read/write until it leaves the engine
  if (meta <= 0) {
    g_backend = Backend::kNone;
    pthread_mutex_unlock(&g_init_lock);
    MPK_LOG(kError, "cannot allocate the metadata key: %d", meta);
    return meta == -ENOSPC ? -ENOSPC : -ENOTSUP;
  }
  const int sync_signal = g_opt_sync_signal ? g_opt_sync_signal
                                            : parse_env_int("MPK_SYNC_SIGNAL", SIGRTMAX - 2, SIGRTMIN, SIGRTMAX);
  if (g_backend == Backend::kHardware) {
    // Before any key protects anything: what the sync handler and lazy grants rely on.
    if (const char *why = pkru_self_check(sync_signal, meta)) {
      key_free(meta);
      g_backend = Backend::kNone;
      note_inactive_reason(why);
      pthread_mutex_unlock(&g_init_lock);
      MPK_LOG(kError, "self-check failed: %s; protection keys are not used", why);
      return -ENOTSUP;
    }
  }
  if (!g_arena.init(meta)) {
    key_free(meta);
    g_backend = Backend::kNone;
    pthread_mutex_unlock(&g_init_lock);
    return -ENOMEM;
  }
  stats_page().backend.store(static_cast<uint32_t>(g_backend), std::memory_order_relaxed);
  g_meta_key = meta;
  g_meta_mask = pkru_mask(meta);
  auto *st = new (g_arena.alloc(sizeof(EngineState))) EngineState(&g_arena);
  // Leave keys for other pkey users: by default at least one besides the metadata key.
  st->key_budget = g_opt_key_budget ? g_opt_key_budget : parse_env_int("MPK_KEY_BUDGET", 13, 1, 14);
  st->evict_rate = evict_rate;
  st->sync_signal = sync_signal;
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
  // Threads that exist already: what their PKRU holds is unknown until their first sync.
  st->threads.adopt_all_tasks([&](ThreadRecord &r) {
    for (int k = 1; k < kHwKeys; ++k) note_held(*st, &r, k, Rights::kReadWrite);
  });
  pthread_setspecific(st->exit_key, t_self);
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
  g_state.store(st, std::memory_order_release);
  roots_seal();  // every root is in place: read-only from now on
  leave(*st, t_self ? (t_self->in_lib.store(1), t_self) : nullptr, 0);
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
  if (created && !g->hw_key) {
    if (int k = load(*st, *g, /*may_evict=*/false, s.rec)) s.grant |= 1u << k;
  }
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
    KeyLock kl(*st, k);
    st->threads.for_each_live([&](ThreadRecord &r) { r.dom[k].store(0, std::memory_order_relaxed); });
    clear_view(st->keys[k]);
    st->cache.release(k);
    publish_rights(*st, k, Rights::kNone);
    // No page carries k now. A thread that cannot be reached keeps what it holds and is signalled
    // again before k is given to another group (load() syncs k first).
    sync_keys(*st, 1u << k, s.rec);
  }
  delete_group(*st, g);
  return 0;
}

// The slow paths of the operations whose entry is in fast_path.cc (engine_begin, engine_end,
// engine_mprotect): what is not resident, or not servable without g_lock.
int begin_slow(EngineState *st, int vkey, int prot) {
  Section s(*st);
  if (!s.rec) return -ENOMEM;
  Locked l;
  PageGroup *g = st->groups.find(vkey);
  if (!g) return -EINVAL;
  if (!within_ceiling(prot, g->ceiling)) return -EACCES;
  bump_hot(Hot::begin_calls);
  int k = g->hw_key;
  if (k) {
    bump_hot(Hot::cache_hits);
  } else {
    bump(stats().cache_misses);
    k = load(*st, *g, /*may_evict=*/true, s.rec);
    if (!k) return -EBUSY;
  }
  KeyLock kl(*st, k);
  if (!s.rec->dom[k].load(std::memory_order_relaxed)) st->keys[k].pins.fetch_add(1, std::memory_order_relaxed);
  s.rec->dom[k].store(static_cast<uint8_t>(rights_of(prot)) + 1, std::memory_order_release);
  st->cache.touch(k, ++st->tick);
  s.grant |= 1u << k;
  return 0;
}

int end_slow(EngineState *st, int vkey) {
  Section s(*st);
  if (!s.rec) return -ENOMEM;
  Locked l;
  PageGroup *g = st->groups.find(vkey);
  if (!g) return -EINVAL;
  int k = g->hw_key;
  if (!k || !s.rec->dom[k].load(std::memory_order_relaxed)) return -EINVAL;  // no open domain
  bump_hot(Hot::end_calls);
  KeyLock kl(*st, k);
  s.rec->dom[k].store(0, std::memory_order_release);
  if (st->keys[k].pins.load(std::memory_order_relaxed)) st->keys[k].pins.fetch_sub(1, std::memory_order_relaxed);
  s.grant |= 1u << k;
  return 0;
}

int mprotect_slow(EngineState *st, int vkey, int prot) {
  Section s(*st);
  Locked l;
  PageGroup *g = st->groups.find(vkey);
  if (!g) return -EINVAL;
  if (!within_ceiling(prot, g->ceiling)) return -EACCES;
  bump_hot(Hot::mprotect_calls);
  return set_group_prot(*st, *g, prot, s);
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
    if (int k = load(*st, *g, /*may_evict=*/false, s.rec)) s.grant |= 1u << k;
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
  bump(stats().heap_allocs);
  return p;
}

int engine_free(int vkey, void *p) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (!p) return 0;
  Section s(*st);
  Locked l;
  bump(stats().heap_frees);
  PageGroup *g = vkey >= 0 ? st->groups.find(vkey) : nullptr;
  Heap::FreeResult r = g && g->heap ? g->heap->free(p) : Heap::FreeResult::kNotOurs;
  if (r == Heap::FreeResult::kOk) return 0;
  bump(stats().bad_frees);
  const char *why = !g ? "unknown vkey"
                    : r == Heap::FreeResult::kDoubleFree ? "double free"
                    : r == Heap::FreeResult::kNotABlock ? "not the start of a block"
                                                        : "not allocated from this group";
  MPK_LOG(kError, "mpk_free(%d, %p): %s; ignored", vkey, p, why);
  return -EINVAL;
}

uint32_t engine_creator_pkru() { return simulated() ? t_sim_pkru : 0; }
void engine_thread_inherit(uint32_t pkru) {
  if (simulated()) t_sim_pkru = pkru;
}

void engine_thread_start(uintptr_t start_routine) {
  EngineState *st = state();
  if (!st) return;
  // Register first, then compute the PKRU from the state (in leave()): a concurrent revocation
  // either finds this thread in the registry or is already in what it computes.
  Section s(*st);
  if (s.rec) {
    pthread_setspecific(st->exit_key, s.rec);
    s.rec->start_routine = start_routine;
    isolation_thread_start(*st, *s.rec);
  }
  // The thread was created with its creator's PKRU. With lazy grants it starts holding nothing on
  // the engine's keys but the eager ones (its first access to a group is granted then); otherwise
  // it takes every key's current right.
  uint32_t managed = st->managed_mask.load(std::memory_order_acquire);
  uint32_t none = rdpkru();
  for (uint32_t m = managed; m; m &= m - 1) none = pkru_with(none, __builtin_ctz(m), Rights::kNone);
  wrpkru(none);
  s.grant = managed & exact_keys(*st);
}

void engine_thread_exit() {
  EngineState *st = state();
  if (!st) return;
  wrpkru(inside_meta(rdpkru()));
  ThreadRecord *rec = t_self;
  // Inside the engine while it waits for the lock: a revoker does not wait for this thread.
  if (rec) rec->in_lib.fetch_add(1, std::memory_order_seq_cst);
  {
    Locked l;
    if (rec && rec->tid.load() == sys::gettid()) reap_thread(*st, rec);
    t_self = nullptr;
  }
  wrpkru(outside_meta(lowered_to_state(*st, rdpkru(), nullptr)));
  release_hot_slot();
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

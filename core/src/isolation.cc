#include "isolation.h"

#include <fcntl.h>
#include <sys/ucontext.h>

#include <atomic>
#include <new>

#include "engine_internal.h"
#include "range_set.h"
#include "raw_log.h"
#include "stats.h"
#include "stats_page.h"
#include "sync.h"
#include "sys.h"
#include "write_spans.h"

namespace mpk {

namespace {

constexpr IsolationHooks &g_hooks = g_roots.hooks;        // roots.h
constexpr std::atomic<int> &g_isolated = g_roots.isolated;  // isolated groups alive
// The key an audit step opened in this thread (0: none).
thread_local int t_step_key __attribute__((tls_model("initial-exec"))) = 0;

constexpr unsigned long kTrapFlag = 0x100;

void read_comm(int tid, char *name) {
  char path[64];
  format_to(path, sizeof path, "/proc/self/task/%d/comm", tid);
  int fd = sys::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[32];
  long n = sys::read(fd, buf, sizeof buf - 1);
  sys::close(fd);
  if (n <= 0) return;
  int len = 0;
  while (len < n && len < 15 && buf[len] != '\n') ++len;
  for (int i = 0; i < 16; ++i) name[i] = i < len ? buf[i] : '\0';
}

uint8_t right_for(const PageGroup &g, const ThreadRecord &r) {
  int right = g_hooks.thread_right ? g_hooks.thread_right(g.region, r.name, r.start_sym[0] ? r.start_sym : nullptr) : 0;
  return static_cast<uint8_t>((right <= 0 ? 0 : right == 1 ? 1 : 2) + 1);
}

// Applies the policy of every isolated group to r. Returns the keys whose right changed for r.
uint32_t apply(EngineState &st, ThreadRecord &r) {
  uint32_t changed = 0;
  for (int k = 1; k < kHwKeys; ++k) {
    PageGroup *g = st.cache.owner(k);
    if (!g || !g->isolate) continue;
    // A thread-toggled group: the policy gives a thread its first right only; from then on the
    // thread's own mprotect calls decide it (a rename must not take a JIT's write right away).
    if (g->thread_toggles && r.iso[k].load(std::memory_order_relaxed)) continue;
    uint8_t v = right_for(*g, r);
    if (r.iso[k].exchange(v, std::memory_order_acq_rel) != v) changed |= 1u << k;
  }
  return changed;
}

void free_writers(PageGroup &g) {
  if (g.writers) {
    g_arena.free(g.writers, sizeof(WriteSpans));
    g.writers = nullptr;
  }
  if (g.raised) {
    g_arena.free(g.raised, sizeof(RangeSet));
    g.raised = nullptr;
  }
}

}  // namespace

void isolation_set_hooks(const IsolationHooks &hooks) {
  RootsWrite w;
  g_hooks = hooks;
}
bool isolation_any() { return g_isolated.load(std::memory_order_acquire) > 0; }

void isolation_forget(PageGroup &g) {
  free_writers(g);
  if (g.isolate) {
    RootsWrite w;
    g_isolated.fetch_sub(1, std::memory_order_release);
  }
}

PageGroup *isolation_adopt(EngineState &st, int vkey, uintptr_t start, size_t len, int prot, int region,
                           bool audit, bool thread_toggles, ThreadRecord *self) {
  PageGroup *g = new_group(st, vkey);
  if (!g) return nullptr;
  g->isolate = true;
  g->audit = audit;
  g->region = static_cast<int16_t>(region);
  g->exec_exact = true;
  g->ceiling = prot;
  g->prot = prot;
  if (thread_toggles) {
    // The page table at the ceiling (the key alone decides who reads and writes), except where
    // the program made the pages inaccessible: a JIT's PROT_NONE reservation stays so until it
    // commits parts of it. Execute is in the ceiling for a mapping made executable and for such
    // a reservation (what a JIT reserves is for code).
    void *w = g_arena.alloc(sizeof(WriteSpans));
    void *r = w ? g_arena.alloc(sizeof(RangeSet)) : nullptr;
    if (!r) {
      if (w) g_arena.free(w, sizeof(WriteSpans));
      delete_group(st, g);
      return nullptr;
    }
    g->writers = new (w) WriteSpans();
    g->raised = new (r) RangeSet();
    g->thread_toggles = true;
    g->exec_exact = false;
    bool code = (prot & PROT_EXEC) || prot == PROT_NONE;
    g->ceiling = g->prot = PROT_READ | PROT_WRITE | (code ? PROT_EXEC : 0);
  }
  if (!g->add_range(g_arena, start, len)) {
    free_writers(*g);
    delete_group(st, g);
    return nullptr;
  }
  // Nobody but this thread knows the address yet, so the order inside is free: take a key, then
  // give every thread its own right and the rest the default.
  int k = load(st, *g, /*may_evict=*/true, self);
  if (!k) {
    free_writers(*g);
    delete_group(st, g);
    return nullptr;
  }
  KeyLock kl(st, k);
  if (g->thread_toggles) {
    // load() put the pages at the ceiling: a reservation goes back to none (with the key).
    if ((prot & PROT_READ) || key_mprotect(reinterpret_cast<void *>(start), len, prot, k) != 0) {
      if (!(prot & PROT_READ)) MPK_LOG(kWarn, "%p+%zu: cannot keep the reservation inaccessible", (void *)start, len);
      g->raised->add(start, start + len);
    }
  }
  st.keys[k].pins.fetch_add(1, std::memory_order_relaxed);
  st.eager_mask.fetch_or(1u << k, std::memory_order_seq_cst);
  publish_rights(st, k, Rights::kNone);
  st.threads.for_each_live([&](ThreadRecord &r) {
    if (!r.name[0]) read_comm(r.tid.load(std::memory_order_relaxed), r.name);
    r.iso[k].store(right_for(*g, r), std::memory_order_release);
  });
  sync_keys(st, 1u << k, self);
  {
    RootsWrite w;
    g_isolated.fetch_add(1, std::memory_order_release);
  }
  return g;
}

namespace {

// [start, end) of g stops being writable for everyone: a thread whose last open part this was
// goes back to the policy's right; other threads are synced before the call returns, as the
// kernel's call would reach them (caller: the lock and g's key lock).
void close_for_all(EngineState &st, PageGroup &g, uintptr_t start, uintptr_t end, ThreadRecord *self,
                   uint32_t *grant) {
  const int k = g.hw_key;
  int32_t lost[WriteSpans::kMax][2];
  int n = g.writers->close(start, end, lost, WriteSpans::kMax);
  bool others = false;
  if (n == WriteSpans::kEveryone) {
    st.threads.for_each_live([&](ThreadRecord &r) {
      if (&r == self || r.iso[k].load(std::memory_order_relaxed) != static_cast<uint8_t>(Rights::kReadWrite) + 1)
        return;
      r.iso[k].store(right_for(g, r), std::memory_order_release);
      others = true;
    });
  }
  for (int i = 0; i < n; ++i) {
    ThreadRecord *r = st.threads.at(lost[i][0]);
    if (r == self || r->tid.load(std::memory_order_relaxed) != lost[i][1]) continue;  // gone meanwhile
    r->iso[k].store(right_for(g, *r), std::memory_order_release);
    others = true;
  }
  if (self && !g.writers->holds(self->index(), self->tid.load(std::memory_order_relaxed))) {
    self->iso[k].store(right_for(g, *self), std::memory_order_release);
    *grant |= 1u << k;
  }
  if (others) sync_keys(st, 1u << k, self);
}

}  // namespace

int isolation_toggle(EngineState &st, PageGroup &g, void *addr, size_t len, int prot, ThreadRecord *self,
                     uint32_t *grant, bool fresh) {
  const int k = g.hw_key;
  KeyLock kl(st, k);
  auto start = reinterpret_cast<uintptr_t>(addr);
  size_t rlen = (len + 4095) & ~size_t{4095};
  if (!(prot & PROT_READ) || (prot & ~g.ceiling)) {
    // No read right (none, write-only, execute-only) or more than the ceiling: a right cannot say
    // that, so the kernel does, for every thread, on that range (which keeps the key).
    int rc = key_mprotect(addr, len, prot, k);
    if (rc != 0) return rc;
    g.raised->remove(start, start + rlen);
    if (!(prot & PROT_WRITE)) close_for_all(st, g, start, start + rlen, self, grant);
    if (!fresh) bump(stats().legacy_passthrough);
    return 0;
  }
  if (fresh || !g.raised->covers(start, start + rlen)) {
    // Ordering: the range is at the ceiling (with the key) before the right below governs it.
    int rc = key_mprotect(addr, len, g.ceiling, k);
    if (rc != 0) return rc;
    g.raised->add(start, start + rlen);
  }
  const uintptr_t lo = g.ranges[0].start, hi = g.ranges[g.nranges - 1].start + g.ranges[g.nranges - 1].len;
  if (!(prot & PROT_WRITE)) {
    close_for_all(st, g, start, start + rlen, self, grant);
  } else if (self) {
    // Opened: the caller alone may write, from when it leaves the engine (the grant bit).
    g.writers->open(self->index(), self->tid.load(std::memory_order_relaxed), start, start + rlen, lo, hi);
    self->iso[k].store(static_cast<uint8_t>(Rights::kReadWrite) + 1, std::memory_order_release);
    *grant |= 1u << k;
  }
  if (!fresh) {  // an mprotect call served without the kernel (a commit is an mmap)
    region_toggled(g.stat_slot, ++g.toggles);
    bump_hot(Hot::legacy_emulated);
  }
  return 0;
}

void isolation_after_fork(EngineState &st, ThreadRecord *self) {
  for (int k = 1; k < kHwKeys; ++k) {
    PageGroup *g = st.cache.owner(k);
    if (g && g->writers) g->writers->after_fork(self ? self->index() : -1, self ? self->tid.load() : 0);
  }
}

void isolation_thread_start(EngineState &st, ThreadRecord &rec) {
  read_comm(sys::gettid(), rec.name);
  if (!isolation_any()) return;
  if (g_hooks.describe_start && rec.start_routine) g_hooks.describe_start(rec.start_routine, rec.start_sym, sizeof rec.start_sym);
  Locked l;
  apply(st, rec);  // this thread's PKRU follows when it leaves the engine
}

void isolation_rescan() {
  EngineState *st = state();
  if (!st || !isolation_any()) return;
  Section s(*st);
  Locked l;
  uint32_t changed = 0;
  st->threads.for_each_live([&](ThreadRecord &r) {
    read_comm(r.tid.load(std::memory_order_relaxed), r.name);
    changed |= apply(*st, r);
  });
  if (changed) {
    sync_keys(*st, changed, s.rec);
    s.grant |= changed;  // this thread's own right follows on its way out
  }
}

bool isolation_fault_info(int key, IsolationFault *out) {
  EngineState *st = state();
  if (!st || key <= 0 || key >= kHwKeys) return false;
  const PageGroup *g = st->cache.owner(key);
  if (!g || !g->isolate || !g->nranges) return false;
  out->region = g->region;
  out->start = g->ranges[0].start;
  out->len = g->ranges[0].len;
  out->audit = g->audit;
  return true;
}

bool isolation_step_open(int key, void *uctx) {
  auto *uc = static_cast<ucontext_t *>(uctx);
  if (t_step_key) return false;  // one step at a time
  uint32_t pkru;
  if (!frame_pkru_read(uctx, &pkru)) return false;
  frame_pkru_write(uctx, pkru_with(pkru, key, Rights::kReadWrite));
  uc->uc_mcontext.gregs[REG_EFL] |= kTrapFlag;
  t_step_key = key;
  return true;
}

bool isolation_learn_grant(int key, bool write, void *uctx) {
  EngineState *st = state();
  ThreadRecord *rec = t_self;
  uint32_t pkru;
  if (!st || !rec || key <= 0 || key >= kHwKeys || !frame_pkru_read(uctx, &pkru)) return false;
  uint8_t want = static_cast<uint8_t>((write ? Rights::kReadWrite : Rights::kRead)) + 1;
  wrpkru(inside_meta(rdpkru()));  // the record is in the metadata arena; sigreturn restores PKRU
  if (rec->iso[key].load(std::memory_order_relaxed) < want) rec->iso[key].store(want, std::memory_order_release);
  Rights r = want_of(*st, rec, key);
  if (static_cast<uint8_t>(r) > rec->held[key].load(std::memory_order_relaxed)) {
    note_held(*st, rec, key, r);  // noted first, then the state read again (note_held)
    held_fence(*st);
    r = want_of(*st, rec, key);
  }
  frame_pkru_write(uctx, pkru_with(pkru, key, r));
  return true;
}

bool isolation_step_close(void *uctx) {
  int key = t_step_key;
  if (!key) return false;
  auto *uc = static_cast<ucontext_t *>(uctx);
  uc->uc_mcontext.gregs[REG_EFL] &= ~kTrapFlag;
  t_step_key = 0;
  EngineState *st = state();
  uint32_t pkru;
  if (st && frame_pkru_read(uctx, &pkru)) {
    wrpkru(outside_meta(rdpkru()));
    frame_pkru_write(uctx, with_wanted(*st, pkru, t_self, 1u << key));
  }
  return true;
}

}  // namespace mpk

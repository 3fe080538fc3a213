#include "legacy.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <new>

#include "engine_internal.h"
#include "fast_path.h"
#include "isolation.h"
#include "mprotect_partial.h"
#include "proc_maps.h"
#include "range_set.h"
#include "raw_log.h"
#include "stats.h"
#include "stats_page.h"
#include "sync.h"
#include "sys.h"
#include "toggle_tracker.h"
#include "tag_bounds.h"
#include "vma_join.h"

namespace mpk {

namespace {

constexpr int kMaxGroups = 4096;
constexpr int kFirstVkey = 1 << 30;  // legacy groups never meet the mpk_* API's vkeys
constexpr int kMaxDissolves = 3;     // then a range is left to the kernel for good
constexpr uint32_t kCutsBeforeSplit = 4;  // sub-range calls before an untoggled group gives way

struct LegacyState {
  LegacyHooks hooks;
  ToggleTracker tracker;
  PageGroup *groups[kMaxGroups];
  int ngroups = 0;
  int next_vkey = kFirstVkey;
  uint64_t tick = 0;  // keyed exceptions' opened_at
  // The hardware keys of each policy region's isolated groups (the call gates open them).
  std::atomic<uint32_t> region_keys[kMaxPolicyRegions];
};

// The emulation's state, published once (its pointer is one of the roots: roots.h).
LegacyState *legacy_state() { return static_cast<LegacyState *>(g_roots.legacy.load(std::memory_order_acquire)); }
// Address bounds of every group and tracked range, readable without the lock: calls outside them
// go straight to the kernel. They only grow (until the process forks or execs).
constinit std::atomic<uintptr_t> g_lo{UINTPTR_MAX}, g_hi{0};

void widen_bounds(uintptr_t start, size_t len) {
  uintptr_t lo = g_lo.load(std::memory_order_relaxed);
  while (start < lo && !g_lo.compare_exchange_weak(lo, start, std::memory_order_release)) {
  }
  uintptr_t hi = g_hi.load(std::memory_order_relaxed), end = start + len;
  while (end > hi && !g_hi.compare_exchange_weak(hi, end, std::memory_order_release)) {
  }
}

bool maybe_tracked(uintptr_t start, size_t len) {
  return start < g_hi.load(std::memory_order_acquire) && g_lo.load(std::memory_order_acquire) < start + len;
}

bool page_aligned(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 4095) == 0; }
size_t page_round(size_t len) { return (len + 4095) & ~size_t{4095}; }

RangeRule rule_for(const LegacyState &ls, int region) {
  return ls.hooks.rule ? ls.hooks.rule(region) : RangeRule{};
}

// A group of `region` went away: its keys are those of the groups it still has (under the lock).
void recount_region_keys(LegacyState &ls, int region) {
  if (region < 0 || region >= kMaxPolicyRegions) return;
  uint32_t keys = 0;
  for (int i = 0; i < ls.ngroups; ++i)
    if (ls.groups[i]->isolate && ls.groups[i]->region == region && ls.groups[i]->hw_key)
      keys |= 1u << ls.groups[i]->hw_key;
  ls.region_keys[region].store(keys, std::memory_order_release);
}

void remove_at(LegacyState &ls, int i) { ls.groups[i] = ls.groups[--ls.ngroups]; }

int index_of(const LegacyState &ls, const PageGroup *g) {
  for (int i = 0; i < ls.ngroups; ++i)
    if (ls.groups[i] == g) return i;
  return -1;
}

// g leaves the groups (its pages are off its key by now): as a keyed exception it becomes a plain
// one of its group (its pages sit on key 0 at its own permission, as a plain one's do); its own
// keyed exceptions become groups in their own right.
void unlink_family(PageGroup &g) {
  if (PageGroup *p = g.parent) {
    for (int i = 0; i < p->nexcepts; ++i)
      if (p->keyed[i] == &g) p->keyed[i] = nullptr;
    g.parent = nullptr;
  }
  for (int i = 0; i < g.nexcepts; ++i)
    if (PageGroup *c = g.keyed[i]) {
      c->parent = nullptr;
      g.keyed[i] = nullptr;
    }
}

// Puts g's pages back on key 0 at exactly the permission the program last gave them and forgets
// the group. Returns false if the page table could not be updated (the group then stays).
// `gone` says the caller is about to unmap or replace all of the group's pages: an isolated
// region then ends quietly; otherwise its isolation ends with a warning.
bool dissolve(EngineState &st, LegacyState &ls, int i, bool gone = false) {
  PageGroup *g = ls.groups[i];
  if (g->hw_key && unload(st, *g) != 0) {
    MPK_LOG(kError, "cannot return a page group to the page table; it stays emulated");
    return false;
  }
  if (g->raised && !gone) {
    // A thread-toggled group went back at its ceiling: what the program never made accessible
    // (an uncommitted reservation) is made so again.
    for (uint32_t r = 0; r < g->nranges; ++r)
      g->raised->for_each_gap(g->ranges[r].start, g->ranges[r].start + g->ranges[r].len,
                              [](uintptr_t a, uintptr_t b) { sys::mprotect(reinterpret_cast<void *>(a), b - a, PROT_NONE); });
  }
  if (g->isolate) {
    if (!gone)
      MPK_LOG(kWarn, "isolated range %p+%zu was remapped or changed in part; it is no longer isolated",
              (void *)g->ranges[0].start, (size_t)g->ranges[0].len);
    isolation_forget(*g);
  }
  unlink_family(*g);
  remove_at(ls, i);
  if (g->isolate) recount_region_keys(ls, g->region);
  region_release(g->stat_slot);
  delete_group(st, g);
  bump(stats().dissolves);
  return true;
}

// Dissolves every group overlapping [start, start+len) and forgets the tracked ranges there.
// `replaced`: the span's pages are about to be unmapped or replaced.
void clear_span(EngineState &st, LegacyState &ls, uintptr_t start, size_t len, bool replaced = false) {
  for (int i = 0; i < ls.ngroups;) {
    const PageGroup *g = ls.groups[i];
    bool whole = replaced && g->nranges == 1 && g->ranges[0].start >= start &&
                 g->ranges[0].start + g->ranges[0].len <= start + len;
    if (g->overlaps(start, len) && dissolve(st, ls, i, whole)) continue;
    ++i;
  }
  ls.tracker.forget(start, len);
  if (replaced) forget_tag_bounds(start, len);
}

// Does the program use protection keys of its own (pkey_alloc went through the shim)?
constinit std::atomic<bool> g_program_keys{false};

// Would the kernel apply prot to all of [start, start+len) without stopping part way? True when
// the range is mapped without holes and every mapping in it can take prot whatever it is: private
// or anonymous shared (a shared file mapping may refuse PROT_WRITE), and no file mapping when prot
// asks for PROT_EXEC (a noexec mount refuses it). Reads /proc/self/maps (no allocation).
bool kernel_takes_whole(uintptr_t start, size_t len, int prot) {
  uintptr_t want = start, end = start + len;
  bool ok = true;
  for_each_line("/proc/self/maps", [&](char *line) {
    MappingLine m;
    if (!parse_mapping(line, &m) || m.hi <= want) return true;
    if (m.lo > want) return false;  // a hole
    bool file = m.path[0] == '/' && __builtin_strncmp(m.path, "/dev/zero", 9) != 0;
    if ((m.perms[3] == 's' && file) || ((prot & PROT_EXEC) && file)) ok = false;
    want = m.hi;
    return want < end;
  });
  return ok && want >= end;
}

// g is given back because a call covered or cut it: a range whose group keeps being given back
// this way is promoted again at most kMaxDissolves times.
void note_cut(LegacyState &ls, const PageGroup &g) {
  if (g.nranges != 1 || g.parent) return;  // a keyed exception is its group's, never promoted
  bool fresh;
  ToggleEntry &e = ls.tracker.touch(g.ranges[0].start, g.ranges[0].len, &fresh);
  if (fresh) e.region = g.region;
  if (++e.dissolves >= kMaxDissolves) e.never = true;
}

// The program's mprotect over a range that touches groups. Groups the range covers whole are
// given back to the kernel by the call itself: one pkey_mprotect(key 0) over the whole range, so
// the kernel splits and merges the VMAs exactly as the program's own mprotect would have (a later
// mremap that needs one VMA then behaves the same). That needs a call the kernel applies whole
// (kernel_takes_whole: else it stops part way and a group's pages would keep its key) and no keys
// of the program's own in it (key 0 would replace them); otherwise, and for groups the range cuts,
// each group is first put back on key 0 at its own permission, then the program's mprotect runs.
int give_back_and_mprotect(EngineState &st, LegacyState &ls, uintptr_t start, size_t rlen, void *addr, size_t len,
                           int prot) {
  bool any = false, all_covered = true;
  int scan = maybe_tracked(start, rlen) ? ls.ngroups : 0;  // outside every group's bounds: none
  for (int j = 0; j < scan; ++j) {
    const PageGroup *g = ls.groups[j];
    if (!g->overlaps(start, rlen)) continue;
    any = true;
    if (g->isolate) all_covered = false;  // dissolve() says the isolation ends
    for (uint32_t r = 0; r < g->nranges; ++r)
      if (g->ranges[r].start < start || g->ranges[r].start + g->ranges[r].len > start + rlen) all_covered = false;
  }
  if (any && all_covered && !g_program_keys.load(std::memory_order_acquire) && kernel_takes_whole(start, rlen, prot)) {
    for (int j = 0; j < ls.ngroups;) {
      PageGroup *g = ls.groups[j];
      if (!g->overlaps(start, rlen)) {
        ++j;
        continue;
      }
      note_cut(ls, *g);
      if (g->hw_key) unload(st, *g, /*retag=*/false);
      if (g->isolate) isolation_forget(*g);
      unlink_family(*g);
      remove_at(ls, j);
      if (g->isolate) recount_region_keys(ls, g->region);
      region_release(g->stat_slot);
      delete_group(st, g);
      bump(stats().dissolves);
    }
    // Ordering: the keys were released above but no other group can take one before this call
    // retags the pages (the engine's lock is held).
    int rc = key_mprotect(addr, len, prot, 0);
    if (rc == 0 && prot == PROT_EXEC) rc = sys::mprotect(addr, len, prot);  // execute-only, as mprotect
    if (rc != 0) MPK_LOG(kWarn, "mprotect(%p, %zu): the kernel refused (errno %d) after the range was checked", addr, len, -rc);
    return rc;
  }
  if (any) {
    for (int j = 0; j < ls.ngroups;) {
      PageGroup *g = ls.groups[j];
      if (g->overlaps(start, rlen)) note_cut(ls, *g);
      if (g->overlaps(start, rlen) && dissolve(st, ls, j)) continue;
      ++j;
    }
  }
  return sys::mprotect(addr, len, prot);
}

// The emulated group whose single range strictly contains [start, start+len), or -1.
int find_containing(const LegacyState &ls, uintptr_t start, size_t len) {
  if (!maybe_tracked(start, len)) return -1;
  for (int i = 0; i < ls.ngroups; ++i) {
    const PageGroup *g = ls.groups[i];
    if (g->nranges != 1 || g->isolate || g->parent) continue;
    uintptr_t gs = g->ranges[0].start, ge = gs + g->ranges[0].len;
    if (gs <= start && start + len <= ge && (gs != start || ge != start + len)) return i;
  }
  return -1;
}

// The thread-toggled group (isolation.h) with a range holding all of [start, start+len), or -1.
int find_thread_toggled(const LegacyState &ls, uintptr_t start, size_t len) {
  if (!maybe_tracked(start, len)) return -1;
  for (int i = 0; i < ls.ngroups; ++i) {
    const PageGroup *g = ls.groups[i];
    if (!g->thread_toggles || !g->hw_key) continue;
    for (uint32_t r = 0; r < g->nranges; ++r)
      if (g->ranges[r].start <= start && start + len <= g->ranges[r].start + g->ranges[r].len) return i;
  }
  return -1;
}

int find_exact(const LegacyState &ls, uintptr_t start, size_t len) {
  for (int i = 0; i < ls.ngroups; ++i) {
    const PageGroup *g = ls.groups[i];
    if (g->nranges == 1 && g->ranges[0].start == start && g->ranges[0].len == len) return i;
  }
  return -1;
}

// The range [start, start+len) now has prot (the kernel said so) and was toggled often enough:
// make it a group. It stays a group even without a key (the page table then serves it, and a later
// call may load it); it is dropped, and never tried again, when its pages cannot take the ceiling.
void promote(EngineState &st, LegacyState &ls, ToggleEntry &e, int prot, Section &s) {
  if (ls.ngroups == kMaxGroups) return;
  PageGroup *g = new_group(st, ls.next_vkey++);
  if (!g) return;
  g->region = e.region;
  RangeRule rule = rule_for(ls, e.region);
  g->exec_exact = rule.exec_exact;
  g->eager = rule.eager;
  g->ceiling = e.prot_union | prot;
  if (g->exec_exact) g->ceiling &= kDataProt;
  g->prot = prot;
  if (!g->add_range(g_arena, e.start, e.len)) {
    delete_group(st, g);
    return;
  }
  bool key_available = st.cache.find_free() || st.keys_taken < st.key_budget;
  set_group_prot(st, *g, prot, s);
  if (!g->hw_key && key_available) {
    // The pages could not be tagged at the ceiling (a file opened read-only, a VMA that cannot be
    // split): leave the range to the kernel for good.
    MPK_LOG(kDebug, "range %p+%zu cannot be emulated; passing it through", (void *)e.start, e.len);
    delete_group(st, g);
    e.never = true;
    return;
  }
  ls.groups[ls.ngroups++] = g;
  g->stat_slot = static_cast<int16_t>(region_claim(ls.hooks.region_name ? ls.hooks.region_name(g->region) : nullptr,
                                                   "emulate", e.start, e.len));
  region_update(g->stat_slot, g->hw_key, g->prot, g->ceiling);
  bump(stats().promotions);
  MPK_LOG(kDebug, "range %p+%zu is a page group (key %d, ceiling %d)", (void *)e.start, e.len, g->hw_key, g->ceiling);
}

// A call on the whole of g: its keyed exceptions take prot as well, by PKRU. One that lost its key
// or cannot take prot becomes a plain exception (its pages on key 0 at its own permission), which
// fold_excepts then folds. Caller: the lock, g's key lock.
int set_keyed_prot(EngineState &st, LegacyState &ls, PageGroup &g, int prot, Section &s) {
  for (int i = 0; i < g.nexcepts; ++i) {
    PageGroup *c = g.keyed[i];
    if (!c) continue;
    KeyLock kl(st, c->hw_key);  // its fast path changes its permission under this lock
    if (c->prot == prot) continue;
    c->opened_at = ++ls.tick;  // it was apart: the program has been using it
    if (c->hw_key && legacy_fits(*c, prot)) {
      if (int rc = set_group_prot(st, *c, prot, s)) return rc;
      continue;
    }
    if (int at = index_of(ls, c); at < 0 || !dissolve(st, ls, at, /*gone=*/true)) return -ENOMEM;
  }
  return 0;
}

// Keyed exception i of g, at g's permission, rejoins g: its pages take g's key again and its own
// key is given up. Caller: the lock, g's key lock.
bool rejoin_keyed(EngineState &st, LegacyState &ls, PageGroup &g, int i) {
  PageGroup *c = g.keyed[i];
  KeyLock kl(st, c->hw_key);
  if (c->prot != g.prot) return false;  // opened again meanwhile (its fast path)
  // Ordering: the pages leave c's key before the key is released (no free key is on any page).
  if (key_mprotect(reinterpret_cast<void *>(g.excepts[i].start), g.excepts[i].len, g.page_prot(), g.hw_key) != 0)
    return false;
  g.drop_except(i);
  c->parent = nullptr;
  unload(st, *c, /*retag=*/false);
  if (int at = index_of(ls, c); at >= 0) remove_at(ls, at);
  delete_group(st, c);
  return true;
}

// Makes [start, start+len), inside g and clear of its exceptions, a keyed exception at prot: a
// group of its own, on a key of its own, so that its calls and g's are PKRU writes (the kernel
// would accept prot: the pages take g's ceiling and more, or nothing changes). Only with a key to
// spare or a keyed exception of g's to give way, never by evicting another group. True if done;
// false with nothing changed. Caller: the lock, g's key lock.
bool add_keyed_except(EngineState &st, LegacyState &ls, PageGroup &g, uintptr_t start, size_t len, int prot,
                      Section &s) {
  // Only in a group the program has set whole since it became one: a large reservation it cuts
  // into its real areas (which become the groups) does not hand out keys on the way.
  if (!g.hw_key || !g.toggles || g.exec_exact || g.parent || ls.ngroups == kMaxGroups ||
      g.nexcepts == PageGroup::kMaxExcepts)
    return false;
  for (int i = 0; i < g.nexcepts; ++i)
    if (g.excepts[i].overlaps(start, len)) return false;
  auto key_to_spare = [&] { return st.cache.find_free() || st.keys_taken < st.key_budget; };
  if (g.nkeyed() >= PageGroup::kMaxKeyed || !key_to_spare()) {
    // The keyed exception opened least recently of those back at g's permission gives way.
    int victim = -1;
    for (int i = 0; i < g.nexcepts; ++i) {
      PageGroup *c = g.keyed[i];
      if (!c || !c->hw_key || (victim >= 0 && c->opened_at >= g.keyed[victim]->opened_at)) continue;
      KeyLock kl(st, c->hw_key);
      if (c->prot == g.prot) victim = i;
    }
    if (victim < 0 || !rejoin_keyed(st, ls, g, victim) || !key_to_spare()) return false;
  }
  PageGroup *c = new_group(st, ls.next_vkey++);
  if (!c) return false;
  c->parent = &g;
  c->region = g.region;
  c->exec_exact = false;
  c->eager = g.eager;
  c->ceiling = g.ceiling | prot;
  c->prot = prot;
  c->opened_at = ++ls.tick;
  // Ordering: the range is g's exception before its pages leave g's key, so that no retag of g
  // puts them back.
  if (!c->add_range(g_arena, start, len) || !g.add_keyed(c)) {
    delete_group(st, c);
    return false;
  }
  if (!load(st, *c, /*may_evict=*/false, s.rec)) {
    g.drop_except(g.nexcepts - 1);
    // A failed tagging left the pages on key 0 at prot; otherwise they are still on g's key.
    key_mprotect(reinterpret_cast<void *>(start), len, g.page_prot(), g.hw_key);
    delete_group(st, c);
    return false;
  }
  s.grant |= 1u << c->hw_key;
  ls.groups[ls.ngroups++] = c;
  publish_view(st, g);  // not fast while it has exceptions
  MPK_LOG(kDebug, "range %p+%zu of group %p+%zu has a key of its own (key %d)", (void *)start, len,
          (void *)g.ranges[0].start, (size_t)g.ranges[0].len, c->hw_key);
  return true;
}

// Keyed exceptions of g that [start, start+len) overlaps become plain ones (caller: the lock, g's
// key lock): a call on a part of one, or beyond its ceiling, is the kernel's to answer.
void demote_keyed(EngineState &st, LegacyState &ls, PageGroup &g, uintptr_t start, size_t len) {
  for (int i = 0; i < g.nexcepts; ++i) {
    PageGroup *c = g.keyed[i];
    if (c && g.excepts[i].overlaps(start, len))
      if (int at = index_of(ls, c); at >= 0) dissolve(st, ls, at, /*gone=*/true);
  }
}

// A call made while this thread is inside the engine goes straight to the kernel: the policy's
// matcher may unwind the stack, and libunwind maps files through the interposed mmap; a signal
// handler installed behind the shim's back may interrupt the engine (the handlers the shim wraps
// run only after it: signal_defer.h). Waiting for the lock this thread holds would never end.
LegacyState *ready_state(EngineState **st) {
  *st = state();
  return *st && !engine_reentered() ? legacy_state() : nullptr;
}

}  // namespace

int legacy_init(const LegacyHooks &hooks) {
  EngineState *st = state();
  if (!st) return -EPERM;
  Section s(*st);
  Locked l;
  if (legacy_state()) return 0;
  void *mem = g_arena.alloc(sizeof(LegacyState));
  if (!mem) return -ENOMEM;
  // Default-initialized, not value-initialized: the arena's memory is zero already, which is an
  // empty toggle table (toggle_tracker.h); only the members with initializers are written.
  auto *ls = new (mem) LegacyState;
  ls->hooks = hooks;
  st->lazy_grants = true;
  stats_page().active.store(1, std::memory_order_relaxed);
  {
    RootsWrite w;
    g_roots.legacy.store(ls, std::memory_order_release);
  }
  return 0;
}


namespace {
int legacy_mprotect_slow(EngineState *st, LegacyState *ls, void *addr, size_t len, int prot);
}  // namespace

int legacy_mprotect(void *addr, size_t len, int prot) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  // What the kernel rejects outright (bad flags, unaligned, empty) never touches a group.
  if (!ls || (prot & ~kAllProt) || !page_aligned(addr) || len == 0) return sys::mprotect(addr, len, prot);
  if (int rc; fast_legacy_mprotect(*st, reinterpret_cast<uintptr_t>(addr), page_round(len), prot, &rc)) return rc;
  return legacy_mprotect_slow(st, ls, addr, len, prot);
}

namespace {

// Out of line: the fast path above then sets up no frame for the slow path's locals.
[[gnu::noinline]] int legacy_mprotect_slow(EngineState *st, LegacyState *ls, void *addr, size_t len, int prot) {
  auto start = reinterpret_cast<uintptr_t>(addr);
  size_t rlen = page_round(len);
  Section s(*st);
  Locked l;
  bump_hot(Hot::legacy_calls);
  if (int t = find_thread_toggled(*ls, start, rlen); t >= 0)
    return isolation_toggle(*st, *ls->groups[t], addr, len, prot, s.rec, &s.grant);
  int i = find_exact(*ls, start, rlen);
  if (i >= 0) {
    PageGroup *g = ls->groups[i];
    if (g->isolate && g->hw_key) {
      // Isolated: the page table holds exactly prot (with the key); threads' rights stay theirs.
      bump(stats().legacy_passthrough);
      KeyLock kl(*st, g->hw_key);
      int rc = key_mprotect(addr, len, prot, g->hw_key);
      if (rc == 0) g->ceiling = g->prot = prot;
      region_update(g->stat_slot, g->hw_key, g->prot, g->ceiling);
      return rc;
    }
    if (legacy_fits(*g, prot)) {
      // The group's permission and counters are shared with the fast path (fast_path.h): all of
      // this under its key's lock.
      KeyLock kl(*st, g->hw_key);
      int rc = set_group_prot(*st, *g, prot, s);
      // The whole group has one permission again: its keyed exceptions take it, its plain ones
      // rejoin it (after the rights changed, so no page is more open than the program asked for
      // on the way).
      if (rc == 0) rc = set_keyed_prot(*st, *ls, *g, prot, s);
      if (rc == 0) rc = fold_excepts(*st, *g);
      region_toggled(g->stat_slot, ++g->toggles);
      region_update(g->stat_slot, g->hw_key, g->prot, g->ceiling);
      if (g->hw_key) bump_hot(Hot::legacy_emulated);
      else bump(stats().legacy_passthrough);
      return rc;
    }
    // More than the ceiling: the kernel decides; the tracker keeps counting with the wider union.
  }
  bump(stats().legacy_passthrough);
  int j = find_containing(*ls, start, rlen);
  if (j >= 0 && prot != PROT_EXEC) {
    // Part of a group: a page-level exception. The sub-range gets a key of its own if it can
    // (add_keyed_except), else it goes to key 0 at exactly prot (the kernel's answer is the
    // call's); the group keeps its key for the rest, and nothing is dissolved: a JIT that opens
    // one page of its code area at a time does not thrash. A group cut kCutsBeforeSplit times
    // and never set whole since it became one (a large reservation whose halves are the real
    // code areas) gives way instead. Exceptions do not count towards
    // their own promotion: once the group is gone ranges are counted afresh, and the ones the
    // program really sets whole become the groups.
    PageGroup *g = ls->groups[j];
    bool gives_way = g->toggles == 0 && g->cuts + 1 >= kCutsBeforeSplit;
    if (!gives_way) {
      KeyLock kl(*st, g->hw_key);
      demote_keyed(*st, *ls, *g, start, rlen);
      // A keyed exception: the program's calls on it and on the whole group are PKRU writes.
      const bool keyed = add_keyed_except(*st, *ls, *g, start, rlen, prot, s);
      if (keyed || g->nexcepts < PageGroup::kMaxExcepts) {
        int rc = keyed ? 0 : key_mprotect(addr, len, prot, 0);
        // Cut out of a VMA on the group's key: the same kind of cut as a tagging (tag_bounds.h).
        note_tag_bounds(start, rlen);
        // A call the kernel refused part way changed a prefix of the range (mprotect_partial.h):
        // that prefix is the exception, as it would be natively.
        uintptr_t applied = rc == 0 ? start + rlen : mprotect_applied_end(start, start + rlen, prot);
        if (applied > start) {
          ++g->cuts;
          if (!keyed) {
            g->add_except(start, applied - start);
            if (g->hw_key) publish_view(*st, *g);  // not fast while it has exceptions
          }
          bump(stats().exceptions);
        }
        return rc;
      }
    }
  }
  int rc = give_back_and_mprotect(*st, *ls, start, rlen, addr, len, prot);
  if (rc != 0) return rc;
  bool fresh;
  ToggleEntry &e = ls->tracker.touch(start, rlen, &fresh);
  if (fresh) {
    widen_bounds(start, rlen);
    e.region = static_cast<int16_t>(ls->hooks.match ? ls->hooks.match(start, rlen, prot, -1, nullptr) : -1);
  }
  RangeRule rule = rule_for(*ls, e.region);
  if (rule.action != RangeRule::kEmulate || prot == PROT_EXEC) e.never = true;
  ++e.count;
  e.prot_union |= prot;
  // A range inside one the program toggles about as often (a JIT's page inside its code area)
  // waits for the larger one: it, not each page, becomes the group.
  if (!e.never && e.count >= static_cast<uint32_t>(rule.promote_after) &&
      !ls->tracker.busier_container(e.start, e.len, e.count))
    promote(*st, *ls, e, prot, s);
  return 0;
}

}  // namespace

int legacy_munmap(void *addr, size_t len) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  auto start = reinterpret_cast<uintptr_t>(addr);
  if (!ls || !page_aligned(addr) || len == 0 || !maybe_tracked(start, page_round(len)))
    return sys::munmap(addr, len);
  Section s(*st);
  Locked l;
  // Ordering: the groups leave their keys before the pages go, so a key is never released while a
  // page still carries it (the kernel's reply then is exactly what it would have been).
  clear_span(*st, *ls, start, page_round(len), /*replaced=*/true);
  return sys::munmap(addr, len);
}

namespace {

// [pa, pa+rlen) was just mapped (or found mapped at start-up) and the policy isolates it: it
// becomes an isolated group before the program sees it (caller: Section s, the lock).
PageGroup *adopt_isolated(EngineState &st, LegacyState &ls, Section &s, uintptr_t pa, size_t rlen, int prot,
                          int region, const RangeRule &rule) {
  if (ls.ngroups == kMaxGroups) return nullptr;
  PageGroup *g = isolation_adopt(st, ls.next_vkey++, pa, rlen, prot, region, rule.audit, rule.thread_toggles, s.rec);
  if (!g) {
    const char *name = ls.hooks.region_name ? ls.hooks.region_name(region) : nullptr;
    MPK_LOG(kError, "region '%s': no protection key left to isolate %p+%zu; it is NOT isolated",
            name ? name : "?", (void *)pa, rlen);
    return nullptr;
  }
  ls.groups[ls.ngroups++] = g;
  if (region >= 0 && region < kMaxPolicyRegions) ls.region_keys[region].fetch_or(1u << g->hw_key, std::memory_order_release);
  s.grant |= 1u << g->hw_key;  // this thread's own right on the region
  const char *kind = rule.heap ? (rule.audit ? "isolate-heap-audit" : "isolate-heap")
                     : rule.thread_toggles ? (rule.audit ? "isolate-thread-audit" : "isolate-thread")
                     : rule.audit        ? "isolate-audit"
                                         : "isolate";
  g->stat_slot = static_cast<int16_t>(
      region_claim(ls.hooks.region_name ? ls.hooks.region_name(region) : nullptr, kind, pa, rlen));
  region_update(g->stat_slot, g->hw_key, g->prot, g->ceiling);
  widen_bounds(pa, rlen);
  bump(stats().promotions);
  return g;
}

}  // namespace

const std::atomic<uint32_t> *legacy_region_key_table() {
  LegacyState *ls = legacy_state();
  return ls ? ls->region_keys : nullptr;
}

PageGroup *legacy_heap_pages(EngineState &st, Section &s, PageGroup *g, int region, void *p, size_t len) {
  LegacyState *ls = legacy_state();
  if (!ls) return nullptr;
  auto pa = reinterpret_cast<uintptr_t>(p);
  if (!g) {
    RangeRule rule = rule_for(*ls, region);
    rule.heap = true;
    return adopt_isolated(st, *ls, s, pa, len, kDataProt, region, rule);
  }
  if (adopt_pages(st, *g, p, len, kDataProt) != 0) return nullptr;
  widen_bounds(pa, len);
  if (g->stat_slot >= 0) region_update(g->stat_slot, g->hw_key, g->prot, g->ceiling);
  return g;
}

void *legacy_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  auto start = reinterpret_cast<uintptr_t>(addr);
  // Only MAP_FIXED replaces pages (MAP_FIXED_NOREPLACE fails instead).
  bool replaces = ls && (flags & MAP_FIXED) && page_aligned(addr) && len && maybe_tracked(start, page_round(len));
  if (!ls || (!replaces && !ls->hooks.has_isolation)) return sys::mmap(addr, len, prot, flags, fd, off);
  Section s(*st);
  Locked l;
  if (replaces && (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE) {
    if (int t = find_thread_toggled(*ls, start, page_round(len)); t >= 0) {
      // A JIT committing (or decommitting) part of its reserved code area: the new pages stay in
      // its group, tagged before anyone but this thread knows them, and count as an mprotect to
      // prot for the threads' rights.
      void *p = sys::mmap(addr, len, prot, flags, fd, off);
      if (sys::mmap_failed(p)) return p;
      if (int rc = isolation_toggle(*st, *ls->groups[t], p, len, prot, s.rec, &s.grant, /*fresh=*/true); rc != 0)
        MPK_LOG(kError, "cannot tag %p+%zu for its region (errno %d): those pages are NOT isolated", p, len, -rc);
      return p;
    }
  }
  if (replaces) clear_span(*st, *ls, start, page_round(len), /*replaced=*/true);
  void *p = sys::mmap(addr, len, prot, flags, fd, off);
  if (sys::mmap_failed(p) || !ls->hooks.has_isolation || !ls->hooks.match) return p;
  // A new mapping an isolation region names becomes an isolated group before anyone sees it.
  char path[256];
  path[0] = '\0';
  if (!(flags & MAP_ANONYMOUS) && fd >= 0) {
    char link[64];
    format_to(link, sizeof link, "/proc/self/fd/%d", fd);
    long n = sys::raw(SYS_readlinkat, AT_FDCWD, (long)link, (long)path, sizeof path - 1);
    path[n > 0 ? n : 0] = '\0';
  }
  size_t rlen = page_round(len);
  auto pa = reinterpret_cast<uintptr_t>(p);
  int region = ls->hooks.match(pa, rlen, prot, flags, path[0] ? path : nullptr);
  RangeRule rule = rule_for(*ls, region);
  if (rule.action == RangeRule::kIsolate) adopt_isolated(*st, *ls, s, pa, rlen, prot, region, rule);
  return p;
}

void legacy_adopt_existing() {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  if (!ls || !ls->hooks.has_isolation || !ls->hooks.match) return;
  // Only regions with thread toggles adopt: without one, no mapping is matched at all (a caller
  // criterion would unwind the stack once per mapping).
  bool any = false;
  for (int r = 0; r < kMaxPolicyRegions && !any; ++r) any = rule_for(*ls, r).thread_toggles;
  if (!any) return;
  Section s(*st);
  Locked l;
  // Found first, adopted after: tagging changes the file being read.
  struct Found {
    uintptr_t lo, hi;
    int prot, region;
  };
  Found found[8];
  int n = 0;
  for_each_line("/proc/self/maps", [&](char *line) {
    MappingLine m;
    if (!parse_mapping(line, &m) || m.path[0] == '[') return true;  // [heap], [stack], [vdso], ...
    int prot = prot_of_perms(m.perms);
    int region = ls->hooks.match(m.lo, m.hi - m.lo, prot, map_flags_of(m), m.path[0] == '/' ? m.path : nullptr);
    RangeRule rule = rule_for(*ls, region);
    if (rule.action == RangeRule::kIsolate && rule.thread_toggles) found[n++] = Found{m.lo, m.hi, prot, region};
    return n < 8;
  });
  for (int i = 0; i < n; ++i) {
    MPK_LOG(kInfo, "region %d: %p+%zu was mapped before the shim started; adopted", found[i].region,
            (void *)found[i].lo, (size_t)(found[i].hi - found[i].lo));
    adopt_isolated(*st, *ls, s, found[i].lo, found[i].hi - found[i].lo, found[i].prot, found[i].region,
                   rule_for(*ls, found[i].region));
  }
}

void *legacy_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  auto start = reinterpret_cast<uintptr_t>(old);
  bool touches = ls && page_aligned(old) &&
                 (maybe_tracked(start, page_round(old_len ? old_len : 1)) ||
                  ((flags & MREMAP_FIXED) && maybe_tracked(reinterpret_cast<uintptr_t>(new_addr), page_round(new_len))));
  if (!touches) return sys::mremap(old, old_len, new_len, flags, new_addr);
  Section s(*st);
  Locked l;
  // The source and any fixed destination leave their groups first; moved pages keep the
  // permission the program gave them.
  clear_span(*st, *ls, start, page_round(old_len ? old_len : 1));
  if (flags & MREMAP_FIXED) clear_span(*st, *ls, reinterpret_cast<uintptr_t>(new_addr), page_round(new_len));
  void *r = sys::mremap(old, old_len, new_len, flags, new_addr);
  // EFAULT: the old range is not inside one VMA. If the pieces are ones the kernel would have
  // merged but for the keys they carried (vma_join.h), join them and ask again; anything else
  // is the kernel's answer as it stands.
  if (r == reinterpret_cast<void *>(-EFAULT) && old_len && join_anon_pieces(start, page_round(old_len))) {
    bump(stats().vma_joins);
    r = sys::mremap(old, old_len, new_len, flags, new_addr);
  }
  if (!sys::mmap_failed(r) && r != old && old_len) forget_tag_bounds(start, page_round(old_len));  // moved away
  return r;
}

void legacy_note_program_key() { g_program_keys.store(true, std::memory_order_release); }

bool legacy_owns_key(int pkey) {
  return pkey > 0 && pkey < kHwKeys && (((g_managed_keys.load(std::memory_order_acquire) >> pkey) & 1u) ||
                                        (g_meta_key && pkey == g_meta_key));
}

int legacy_pkey_mprotect(void *addr, size_t len, int prot, int pkey) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  if (legacy_owns_key(pkey)) return -EINVAL;  // not the program's key: as if never allocated
  auto start = reinterpret_cast<uintptr_t>(addr);
  if (!ls || !page_aligned(addr) || len == 0 || !maybe_tracked(start, page_round(len)))
    return sys::pkey_mprotect(addr, len, prot, pkey);
  Section s(*st);
  Locked l;
  clear_span(*st, *ls, start, page_round(len));
  return sys::pkey_mprotect(addr, len, prot, pkey);
}

namespace {

// Keys of resident groups that overlap [start, start+len) and on which the state gives this
// thread more than its PKRU `cur` holds.
uint32_t keys_behind(const EngineState &st, uintptr_t start, size_t len, uint32_t cur) {
  uint32_t behind = 0;
  for (uint32_t m = st.managed_mask.load(std::memory_order_acquire); m; m &= m - 1) {
    int k = __builtin_ctz(m);
    const KeyState &ks = st.keys[k];
    uintptr_t a = ks.start.load(std::memory_order_relaxed);
    size_t n = ks.len.load(std::memory_order_relaxed);
    if (!n || a >= start + len || start >= a + n) continue;
    if (want_of(st, t_self, k) > pkru_rights(cur, k)) behind |= 1u << k;
  }
  return behind;
}

}  // namespace

bool legacy_catch_up(const void *p, size_t len) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  if (!ls || !g_managed_keys.load(std::memory_order_relaxed)) return false;
  auto start = reinterpret_cast<uintptr_t>(p);
  if (!len || !maybe_tracked(start, len)) return false;
  uint32_t cur = rdpkru();
  if (pkru_rights(cur, g_meta_key) == Rights::kNone) {
    // Never through the engine (started before it, or from a raw clone): the state cannot even
    // be read with this PKRU. Entering and leaving registers the thread and writes its PKRU.
    Section s(*st);
    s.grant = keys_behind(*st, start, len, rdpkru());
    return true;
  }
  uint32_t behind = keys_behind(*st, start, len, cur);
  if (!behind) return false;
  {
    Section s(*st);  // leaving gives this thread the keys the buffer needs, and only those
    s.grant = behind;
  }
  bump(stats().efault_repairs);
  return true;
}

bool legacy_repair_efault(const void *p, size_t len) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  auto start = reinterpret_cast<uintptr_t>(p);
  if (!ls || !maybe_tracked(start & ~uintptr_t{4095}, len ? len : 1)) return false;
  uint32_t before = rdpkru();
  uint32_t behind = keys_behind(*st, start, len ? len : 1, before);
  if (!behind) return false;
  {
    Section s(*st);
    s.grant = behind;
  }
  uint32_t after = rdpkru();
  for (uint32_t m = behind; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    if (pkru_rights(after, k) > pkru_rights(before, k)) {
      bump(stats().efault_repairs);
      return true;
    }
  }
  return false;
}

namespace {

// The rights of every live thread on an isolated region, appended to its stats row. Runs under
// the engine's lock (legacy_stats_json).
int thread_rights_json(int slot, char *buf, int cap) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  if (!ls) return 0;
  for (int i = 0; i < ls->ngroups; ++i) {
    const PageGroup *g = ls->groups[i];
    if (g->stat_slot != slot || !g->isolate || !g->hw_key) continue;
    int k = g->hw_key, t = 0;
    int n = format_to(buf, cap, ",\"threads\":[");
    st->threads.for_each_live([&](ThreadRecord &r) {
      if (n > cap - 120) return;
      uint8_t v = r.iso[k].load(std::memory_order_relaxed);
      const char *right = v == 3 ? "rw" : v == 2 ? "r" : "none";
      n += format_to(buf + n, cap - n, "%s{\"tid\":%d,\"name\":\"%s\",\"right\":\"%s\"}", t++ ? "," : "",
                     r.tid.load(std::memory_order_relaxed), r.name, right);
    });
    return n + format_to(buf + n, cap - n, "]");
  }
  return 0;
}

}  // namespace

int legacy_stats_json(char *buf, int cap) {
  EngineState *st;
  LegacyState *ls = ready_state(&st);
  if (!ls) return stats_page_json(stats_page(), buf, cap, nullptr);
  wrpkru(inside_meta(rdpkru()));
  pthread_mutex_lock(&g_lock);
  int n = stats_page_json(stats_page(), buf, cap, thread_rights_json);
  pthread_mutex_unlock(&g_lock);
  wrpkru(outside_meta(rdpkru()));
  return n;
}

}  // namespace mpk

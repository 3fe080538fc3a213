#include "fast_path.h"

#include <sys/mman.h>

#include <cerrno>

#include "engine.h"
#include "engine_internal.h"
#include "page_group.h"
#include "stats.h"
#include "stats_page.h"
#include "sync.h"

namespace mpk {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// What a fast operation decided, under its key's lock.
struct Change {
  bool ok = false;            // false: decline (the slow path serves the call)
  int rc = 0;                 // the call's result when ok
  bool set_own = false;       // the caller's right on the key changes to `own`
  Rights own = Rights::kNone;
  bool revoked = false;       // other threads must be synced (a revocation, or an eager grant)
};

}  // namespace

// A sync handler ran while this thread's PKRU was being rewritten (acks moved): its edit of the
// register may have been overwritten with an older value, a revocation or an eager grant. Every
// key is lowered to the state again, and the exact keys take the state's right (the handler took
// their pending bits, so nothing else would give back a grant it made).
void settle(EngineState &st, ThreadRecord *rec) {
  for (;;) {
    uint64_t acks = rec->acks.load(kRelaxed);
    wrpkru(inside_meta(rdpkru()));
    uint32_t v = pkru_from_state(st, rec, st.managed_mask.load(std::memory_order_acquire) & exact_keys(st));
    if (note_held_all(st, rec, v)) held_fence(st);
    // Ordering: held[] changed before the state is read again (pkru_agrees).
    if (!pkru_agrees(st, rec, v)) continue;
    wrpkru(outside_meta(v));
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (rec->acks.load(kRelaxed) == acks) return;
  }
}

namespace {

// Might a thread other than self need this sync of key k (a holder of k, or any live thread if k
// is eager)? sync_keys() asks the same first; this is its answer inline for the common case of
// a thread toggling what only it holds. Read after the key's new rights (seq_cst), as there.
[[gnu::always_inline]] inline bool others_may_hold(const EngineState &st, int k, const ThreadRecord *self) {
  const std::atomic<uint64_t> *set = (exact_keys(st) >> k & 1u) ? st.threads.live_set() : st.keys[k].holders;
  const int words = st.threads.words(), own = self->word();
  for (int w = 0; w < words; ++w) {
    uint64_t b = set[w].load(std::memory_order_seq_cst);
    if (w == own) b &= ~self->bit();
    if (b) return true;
  }
  return false;
}

// The frame every fast operation runs in: metadata open, key k locked, `body` decides and changes
// the state, a revocation is synced, the caller's right is noted and written, metadata closed.
// Its two PKRU writes are counted by the caller when it returns true (bump_hot_call, with the
// call's own counters), here when it declines.
template <typename Body>
[[gnu::always_inline]] inline bool run(EngineState &st, int k, Body body, int *rc) {
  ThreadRecord *rec = self_rec(st);
  // A thread the engine has not met, or one inside a program's signal handler (whose PKRU lasts
  // only until the handler returns): the slow path knows what to do with both.
  if (!rec || t_handler_depth || k <= 0 || k >= kHwKeys) return false;
  EngineEntry entry;  // before the key's lock: a program handler waits until this call is done
  KeyState &ks = st.keys[k];
  std::atomic_signal_fence(std::memory_order_seq_cst);
  const uint64_t acks = rec->acks.load(kRelaxed);
  const bool sim = simulated();
  const uint32_t opened = inside_meta(rdpkru_on(sim));
  wrpkru_uncounted(sim, opened);  // 1st PKRU write (both are counted by the caller, or below)
  // A slow path or fork waiting for the lock is seen here and given it (KeyLock::acquire_fast).
  bool biased;
  if (!KeyLock::acquire_fast(ks, rec->index() + 1, st.membarrier_ok, &biased)) {
    wrpkru_uncounted(sim, outside_meta(rdpkru_on(sim)));
    wrpkru_count(2);
    if (rec->acks.load(kRelaxed) != acks) settle(st, rec);
    return false;
  }
  Change c = body(ks);
  if (!c.ok) {
    KeyLock::release_fast(ks, biased);
    wrpkru_uncounted(sim, outside_meta(rdpkru_on(sim)));
    wrpkru_count(2);
    if (rec->acks.load(kRelaxed) != acks) settle(st, rec);
    return false;
  }
  bool synced = !c.revoked || !others_may_hold(st, k, rec) || sync_keys(st, 1u << k, rec, /*may_reap=*/false);
  // Under the key's lock no one else changes its rights, so noting this thread's own right needs
  // no second look at the state (note_held).
  if (c.set_own && static_cast<uint8_t>(c.own) != rec->held[k].load(kRelaxed)) {
    rec->held[k].store(static_cast<uint8_t>(c.own), std::memory_order_release);
    std::atomic<uint64_t> &w = ks.holders[rec->word()];
    uint64_t bit = rec->bit();
    if (c.own != Rights::kNone && !(w.load(kRelaxed) & bit)) w.fetch_or(bit, std::memory_order_seq_cst);
  }
  if (!ks.referenced.load(kRelaxed)) ks.referenced.store(1, kRelaxed);
  KeyLock::release_fast(ks, biased);
  // From the value written above, not read again: a sync handler that changed the register since
  // moved acks, and settle() below computes every key again.
  wrpkru_uncounted(sim, outside_meta(c.set_own ? pkru_with(opened, k, c.own) : opened));  // 2nd PKRU write
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (rec->acks.load(kRelaxed) != acks) settle(st, rec);
  *rc = c.rc;
  if (!synced) {
    // A thread could not take the revocation: the page table enforces it for everyone instead
    // (the slow path, which may take g_lock; this thread holds no lock now).
    demote_key(st, k);
  }
  return true;
}

// Publishes a new process-wide right on k. A revocation, and any change of an eager key, must be
// ordered before the holders' held[] is read (sync_keys), or a thread that changes its held[]
// meanwhile (lazy_grant, leave, the sync handler) could read the old right while this reads its
// old held[] (x86 lets a plain store pass a later load). With membarrier that order costs this
// side nothing: the other side runs held_fence() between its held[] store and its read of the
// state. Without it, a seq_cst store (a locked instruction). A grant on a lazy key reaches no one
// but the caller and needs no order.
bool publish(const EngineState &st, KeyState &ks, Rights old, Rights now, bool eager) {
  if (now == old) return false;
  // Constant orders in each branch: GCC makes a store whose order is not a constant seq_cst.
  if ((now < old || eager) && !st.membarrier_ok)
    ks.rights.store(static_cast<uint8_t>(now), std::memory_order_seq_cst);
  else
    ks.rights.store(static_cast<uint8_t>(now), std::memory_order_release);
  // A compiler barrier: the holders are read after the store in program order (the CPU may
  // still let the load pass it; held_fence() on the other side covers that).
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return now < old;
}

int key_of_vkey(const EngineState &st, int vkey) {
  int k = st.by_vkey[hint_of_vkey(vkey)].load(std::memory_order_acquire);
  return k && st.keys[k].vkey.load(kRelaxed) == vkey ? k : 0;
}

// The group on k if the fast paths may serve it (checked under k's lock).
PageGroup *fast_group(KeyState &ks, int k) {
  PageGroup *g = ks.group.load(kRelaxed);
  return g && ks.fast.load(kRelaxed) && g->hw_key == k ? g : nullptr;
}

// The group of vkey on k if the fast paths may serve it and prot is within its ceiling; else null,
// with *c saying decline (no such group) or the call's result (EACCES).
PageGroup *vkey_group(KeyState &ks, int k, int vkey, int prot, Change *c) {
  PageGroup *g = fast_group(ks, k);
  if (!g || g->vkey != vkey) return nullptr;
  c->ok = true;
  if (!within_ceiling(prot, g->ceiling)) {
    c->rc = -EACCES;
    return nullptr;
  }
  return g;
}

}  // namespace

bool fast_legacy_mprotect(EngineState &st, uintptr_t start, size_t len, int prot, int *rc) {
  int k = st.by_start[hint_of_start(start)].load(std::memory_order_acquire);
  if (!k || st.keys[k].start.load(kRelaxed) != start || st.keys[k].len.load(kRelaxed) != len) return false;
  bool done = run(st, k, [&](KeyState &ks) {
    Change c;
    PageGroup *g = fast_group(ks, k);
    if (!g || ks.start.load(kRelaxed) != start || ks.len.load(kRelaxed) != len || !legacy_fits(*g, prot)) return c;
    if (g->page_prot_changes(prot)) return c;  // execute rights change in the page table: not here
    const int old = g->prot;
    g->prot = prot;
    Rights old_r = rights_of(old), now = rights_of(prot);
    bool eager = exact_keys(st) >> k & 1u;  // a region asking for eager grants
    c.revoked = publish(st, ks, old_r, now, eager) || (eager && now != old_r);
    c.set_own = true;
    c.own = now;
    c.ok = true;
    region_toggled_to(g->stat_slot, prot, ++g->toggles);  // its key and ceiling are what they were
    return c;
  }, rc);
  if (done) {
    bump_hot_call(2, Hot::legacy_calls, Hot::legacy_emulated);
  }
  return done;
}

namespace {
[[gnu::always_inline]] inline bool fast_mprotect(EngineState &st, int vkey, int prot, int *rc) {
  int k = key_of_vkey(st, vkey);
  if (!k) return false;
  bool done = run(st, k, [&](KeyState &ks) {
    Change c;
    PageGroup *g = vkey_group(ks, k, vkey, prot, &c);
    if (!g) return c;
    if (g->page_prot_changes(prot)) {
      c.ok = false;
      return c;
    }
    const int old = g->prot;
    g->prot = prot;
    Rights old_r = rights_of(old), now = rights_of(prot);
    // Eager grants (libmpk.so's API without the shim): every thread takes a grant now, as it
    // takes a revocation; sync_keys decides whom to signal.
    bool eager = exact_keys(st) >> k & 1u;
    c.revoked = publish(st, ks, old_r, now, eager) || (eager && now != old_r);
    c.set_own = true;
    c.own = want_of(st, t_self, k);
    return c;
  }, rc);
  if (done) {
    if (*rc == 0) {
      bump_hot_call(2, Hot::mprotect_calls, Hot::cache_hits);
      bump_hot(Hot::mprotect_by_pkru);
    } else {
      bump_hot_call(2, Hot::mprotect_calls);
    }
  }
  return done;
}

[[gnu::always_inline]] inline bool fast_begin(EngineState &st, int vkey, int prot, int *rc) {
  int k = key_of_vkey(st, vkey);
  if (!k) return false;
  bool done = run(st, k, [&](KeyState &ks) {
    Change c;
    if (!vkey_group(ks, k, vkey, prot, &c)) return c;
    ThreadRecord *rec = t_self;
    if (!rec->dom[k].load(kRelaxed)) ks.pins.store(ks.pins.load(kRelaxed) + 1, kRelaxed);
    rec->dom[k].store(static_cast<uint8_t>(rights_of(prot)) + 1, std::memory_order_release);
    c.set_own = true;
    c.own = rights_of(prot);
    return c;
  }, rc);
  if (done) {
    bump_hot_call(2, Hot::begin_calls, *rc == 0 ? Hot::cache_hits : Hot::kCount);
  }
  return done;
}

[[gnu::always_inline]] inline bool fast_end(EngineState &st, int vkey, int *rc) {
  int k = key_of_vkey(st, vkey);
  if (!k) return false;
  bool done = run(st, k, [&](KeyState &ks) {
    Change c;
    PageGroup *g = fast_group(ks, k);
    if (!g || g->vkey != vkey) return c;
    c.ok = true;
    ThreadRecord *rec = t_self;
    if (!rec->dom[k].load(kRelaxed)) {  // no open domain
      c.rc = -EINVAL;
      return c;
    }
    rec->dom[k].store(0, std::memory_order_release);
    if (uint32_t p = ks.pins.load(kRelaxed)) ks.pins.store(p - 1, kRelaxed);
    c.set_own = true;
    c.own = want_of(st, rec, k);
    return c;
  }, rc);
  if (done) {
    if (*rc == 0) bump_hot_call(2, Hot::end_calls);
    else wrpkru_count(2);
  }
  return done;
}

}  // namespace

// The public entries (engine.h): arguments checked, the fast path inlined, the slow path called.
int engine_begin(int vkey, int prot) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (vkey < 0 || (prot & ~kDataProt)) return -EINVAL;
  if (int rc; fast_begin(*st, vkey, prot, &rc)) return rc;
  return begin_slow(st, vkey, prot);
}

int engine_end(int vkey) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (vkey < 0) return -EINVAL;
  if (int rc; fast_end(*st, vkey, &rc)) return rc;
  return end_slow(st, vkey);
}

int engine_mprotect(int vkey, int prot) {
  EngineState *st = state();
  if (!st) return -EPERM;
  if (vkey < 0 || !valid_prot(prot)) return -EINVAL;
  if (int rc; fast_mprotect(*st, vkey, prot, &rc)) return rc;
  return mprotect_slow(st, vkey, prot);
}

}  // namespace mpk

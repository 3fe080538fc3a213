// engine_state.h - the engine's global state and the rules for touching it.
//
// Everything mutable lives in EngineState inside the metadata arena (write-disabled by key outside
// the engine's critical sections). Two kinds of lock:
//   g_lock        the slow paths: loading, evicting, promoting, mapping, thread bookkeeping.
//   KeyState.lock one hardware key: its process-wide rights, the resident group's permission, pins
//                 and the fast-path view. The fast paths (fast_path.h) take only this one, and only
//                 with try-lock, or through its bias (KeyLock::acquire_fast: a thread that keeps
//                 taking it uncontended holds it with plain stores until another takes the bias
//                 back); a slow path that changes a key's state takes g_lock, then it.
// The sync signal handler takes no lock: it reads only atomics (KeyState.rights, thread records).
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "cpu.h"
#include "group_table.h"
#include "key_cache.h"
#include "meta_arena.h"
#include "roots.h"
#include "thread_registry.h"

namespace mpk {

struct PageGroup;

// One hardware key. Padded to its own cache lines: threads toggling different keys share none.
struct alignas(64) KeyState {
  std::atomic<int32_t> lock{0};     // 0 free, else the holder's tid
  // Slow-path threads spinning for `lock` (KeyLock, fork). A fast path that takes the lock while
  // one waits gives it back at once and takes the slow path, which queues behind g_lock: a thread
  // toggling the key in a loop cannot starve them.
  std::atomic<uint32_t> waiters{0};
  // A lock biased to one thread (its lock id; 0 none): the thread that keeps taking the lock
  // uncontended enters its critical section with plain stores instead of a locked instruction
  // (KeyLock::acquire_fast). Anyone else takes `lock`, then revokes the bias (revoke_bias).
  std::atomic<int32_t> bias{0};
  std::atomic<uint8_t> bias_busy{0};  // the biased thread is inside its critical section
  int32_t streak_id = 0;              // under `lock`: who took it last, and how many times running
  int32_t streak = 0;
  std::atomic<uint8_t> rights{0};   // process-wide Rights, for threads with no domain/isolation on it
  std::atomic<uint8_t> referenced{0};  // used by a fast path since the last eviction choice
  // The resident group, as the fast paths see it: written under g_lock and the key lock, read
  // under the key lock (or without it as a hint, checked again under it).
  std::atomic<PageGroup *> group{nullptr};
  std::atomic<int> vkey{-1};
  std::atomic<uintptr_t> start{0};  // the group's only range (len 0: several ranges)
  std::atomic<size_t> len{0};
  std::atomic<bool> fast{false};    // the fast paths may serve it (not isolated)
  std::atomic<uint32_t> pins{0};    // open domains (mpk_begin); a pinned key is never evicted
  // Which threads may hold more than kNone on this key (bit = ThreadRecord::index). A revocation
  // signals among these only. Set by the thread that gains a right (or for it, when adopted);
  // cleared when the key is released or the thread's record is freed.
  std::atomic<uint64_t> holders[ThreadRegistry::kMaxThreads / 64] = {};
};

// Fast-path lookup: a range start or a vkey hashed to the key that (probably) holds it; the
// KeyState is checked under its lock before use. A miss only means the slow path.
constexpr int kHintSlots = 256;
inline uint32_t hint_of_start(uintptr_t start) { return static_cast<uint32_t>((start >> 12) * 0x9E3779B1u) >> 24; }
inline uint32_t hint_of_vkey(int vkey) { return (static_cast<uint32_t>(vkey) * 0x9E3779B1u) >> 24; }

struct EngineState {
  explicit EngineState(MetaArena *a) : groups(a) {}

  KeyState keys[kHwKeys];
  KeyCache cache;
  GroupTable groups;
  ThreadRegistry threads;
  std::atomic<uint8_t> by_start[kHintSlots] = {};
  std::atomic<uint8_t> by_vkey[kHintSlots] = {};

  // Keys the engine owns for groups (bit k), whether or not a group holds them now.
  std::atomic<uint32_t> managed_mask{0};

  int evict_rate = 0;
  int evict_credit = 0;  // Bresenham accumulator: evict on exactly evict_rate% of misses
  uint64_t tick = 0;
  int key_budget = 0;    // at most this many keys for groups
  int keys_taken = 0;
  int sync_signal = 0;
  bool membarrier_ok = false;
  // Grants reach other threads lazily: only revocations signal, and a thread that faults on a
  // right it may have is repaired by the fault handler (lazy_grant() in sync.h). The shim's mode.
  bool lazy_grants = false;
  // Keys whose grants are eager even with lazy_grants (isolated groups: a thread granted by another
  // thread's action must not meet EFAULT in its system calls).
  std::atomic<uint32_t> eager_mask{0};
  pthread_key_t exit_key{};
};

// The metadata arena and the state. g_state is published once, when initialisation finishes.
// All of them live in the read-only roots page (roots.h).
inline constexpr MetaArena &g_arena = g_roots.arena;
inline constexpr std::atomic<EngineState *> &g_state = g_roots.state;
extern constinit pthread_mutex_t g_lock;
inline constexpr int &g_meta_key = g_roots.meta_key;           // 0 before init
inline constexpr uint32_t &g_meta_mask = g_roots.meta_mask;    // PKRU bits of the metadata key
// Copies, outside the metadata arena, of what code running with an unknown PKRU reads (a thread
// created before the engine started still has the default PKRU, where the metadata key is
// closed): the keys the engine owns and the sync signal. Both are set once and only grow.
inline constexpr std::atomic<uint32_t> &g_managed_keys = g_roots.managed_keys;
inline constexpr std::atomic<int> &g_sync_signal = g_roots.sync_signal;

// The calling thread's record (initial-exec TLS: safe in signal handlers). Read it through
// self_rec(): thread-local memory cannot be sealed with the roots (roots.h), so the pointer is
// checked to be one of the registry's records before the engine trusts it.
extern constinit thread_local ThreadRecord *t_self __attribute__((tls_model("initial-exec")));
[[noreturn]] void self_rec_corrupt(const void *p);

// How many program signal handlers this thread is running (the shim's trampolines count them).
// Inside one, the PKRU written now lasts only until the handler returns.
extern constinit thread_local int t_handler_depth __attribute__((tls_model("initial-exec")));

inline ThreadRecord *self_rec(const EngineState &st) {
  ThreadRecord *r = t_self;
  if (r && !st.threads.owns(r)) [[unlikely]] self_rec_corrupt(r);
  return r;
}

// Keys the calling thread holds read/write because it is inside a call gate (gate_rights.h):
// thread-local, written only by the thread itself, read by its own sync handler.
extern constinit thread_local uint32_t t_gate_keys __attribute__((tls_model("initial-exec")));

// The right the state gives rec on key k: read/write while rec (the calling thread) is inside a
// call gate that opens k, else its domain, else its isolation right, else the key's process-wide
// right. rec may be null (a thread with neither).
inline Rights want_of(const EngineState &st, const ThreadRecord *rec, int k) {
  if ((t_gate_keys >> k & 1u) && rec == t_self) [[unlikely]] return Rights::kReadWrite;
  uint8_t d = rec ? rec->dom[k].load(std::memory_order_acquire) : 0;
  if (!d && rec) d = rec->iso[k].load(std::memory_order_acquire);
  return d ? static_cast<Rights>(d - 1) : static_cast<Rights>(st.keys[k].rights.load(std::memory_order_seq_cst));
}

// Keys whose changes reach every thread exactly, grants included: all of them without lazy grants
// (libmpk.so), else the eager ones (isolated regions, regions asking for eager grants). On the
// others a sync only ever lowers a thread's right.
inline uint32_t exact_keys(const EngineState &st) {
  return st.lazy_grants ? st.eager_mask.load(std::memory_order_acquire) : ~0u;
}

// PKRU `base` with every key in `keys` set to what the state gives rec.
uint32_t with_wanted(const EngineState &st, uint32_t base, const ThreadRecord *rec, uint32_t keys);
// PKRU `base` with every managed key lowered to what the state gives rec (never raised).
uint32_t lowered_to_state(const EngineState &st, uint32_t base, const ThreadRecord *rec);
// Records that rec's PKRU now holds r on key k (its held[] byte and the key's holder set). A
// thread records only its own rights, or its sync handler does; ordering: see note_held().
void note_held(EngineState &st, ThreadRecord *rec, int k, Rights r);
// This thread's PKRU with `keys` set to what the state gives rec and every other managed key
// lowered to it. A grant among `keys` is noted first and the state read again after (note_held).
uint32_t pkru_from_state(EngineState &st, ThreadRecord *rec, uint32_t keys);
// note_held for every managed key, from a whole PKRU value (only raising unless may_lower). True
// if it raised a key, or lowered an exact one (held_fence() is then due).
bool note_held_all(EngineState &st, ThreadRecord *rec, uint32_t pkru, bool may_lower = true);
// Orders this thread's held[] stores before its next reads of the state against a fast path that
// publishes a change of rights without a fence of its own (publish(), fast_path.cc): with
// membarrier, the fast path's side of the pairing costs nothing and this side one system call.
// Due after raising a held[] right or setting a holder bit, and after lowering an exact key's
// held[] (an eager grant reads it), before the state is read to decide the register.
void held_fence(const EngineState &st);
// Does PKRU value v agree with the state for rec: every exact key at the state's right, no lazy
// key above it? Read after note_held_all() to catch a change published in between.
bool pkru_agrees(const EngineState &st, const ThreadRecord *rec, uint32_t v);

// Meta-key bits for a thread outside the engine: write-disabled (the engine's data stays readable).
// Branch-free on the key's two bits (g_meta_mask, 0 without a metadata key): read is the
// write-disable bit, the higher of the two.
inline uint32_t outside_meta(uint32_t pkru) { return (pkru & ~g_meta_mask) | (g_meta_mask & 0xAAAAAAAAu); }
inline uint32_t inside_meta(uint32_t pkru) { return pkru & ~g_meta_mask; }

}  // namespace mpk

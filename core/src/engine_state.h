// engine_state.h - the engine's global state and the rules for touching it.
//
// Everything mutable lives in EngineState inside the metadata arena (write-disabled by key outside
// the engine's critical sections). Mutations happen under `lock` inside a Section. The sync signal
// handler takes no lock: it reads only the atomics (key_rights, managed_mask, gen, thread records).
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>

#include "cpu.h"
#include "group_table.h"
#include "key_cache.h"
#include "meta_arena.h"
#include "thread_registry.h"

namespace mpk {

struct EngineState {
  explicit EngineState(MetaArena *a) : groups(a) {}

  KeyCache cache;
  GroupTable groups;
  ThreadRegistry threads;

  // Process-wide rights per hardware key, for threads without an open domain on it.
  std::atomic<uint8_t> key_rights[kHwKeys] = {};
  // Keys the engine owns for groups (bit k), whether or not a group holds them now.
  std::atomic<uint32_t> managed_mask{0};
  // Bumped after every change of key_rights or a thread's domains; threads leaving the engine
  // recompute their PKRU until they see it unchanged.
  std::atomic<uint64_t> gen{0};

  int evict_rate = 0;
  int evict_credit = 0;  // Bresenham accumulator: evict on exactly evict_rate% of misses
  uint64_t tick = 0;
  int key_budget = 0;    // at most this many keys for groups
  int keys_taken = 0;
  int sync_signal = 0;
  bool membarrier_ok = false;
  // Grants reach other threads lazily: only revocations signal, and a thread that faults on a
  // right it holds is repaired by the fault handler (lazy_grant() in sync.h). The shim's mode.
  bool lazy_grants = false;
  // Keys whose grants are eager even with lazy_grants (isolated groups: a thread granted by another
  // thread's action must not meet EFAULT in its system calls).
  std::atomic<uint32_t> eager_mask{0};
  pthread_key_t exit_key{};
};

// The metadata arena and the state. g_state is published once, when initialisation finishes.
extern constinit MetaArena g_arena;
extern constinit std::atomic<EngineState *> g_state;
extern constinit pthread_mutex_t g_lock;
extern constinit int g_meta_key;  // 0 before init
extern constinit uint32_t g_meta_mask;  // PKRU bits of the metadata key
// Copies, outside the metadata arena, of what code running with an unknown PKRU reads (a thread
// created before the engine started still has the default PKRU, where the metadata key is
// closed): the keys the engine owns and the sync signal. Both are set once and only grow.
extern constinit std::atomic<uint32_t> g_managed_keys;
extern constinit std::atomic<int> g_sync_signal;

// The calling thread's record (initial-exec TLS: safe in signal handlers).
extern thread_local ThreadRecord *t_self __attribute__((tls_model("initial-exec")));

// How many program signal handlers this thread is running (the shim's trampolines count them).
// Inside one, the PKRU written now lasts only until the handler returns.
extern thread_local int t_handler_depth __attribute__((tls_model("initial-exec")));

// Records v as rec's shadow PKRU. Unless may_lower, a managed key's right in the shadow never
// shrinks (the thread may resume a context that holds more).
void note_shadow(const EngineState &st, ThreadRecord *rec, uint32_t v, bool may_lower);

// The PKRU a thread should hold on the engine's group keys, starting from `base` (other keys,
// including the metadata key, keep base's bits). rec may be null (a thread with no domains).
uint32_t compute_pkru(const EngineState &st, uint32_t base, const ThreadRecord *rec);

// Meta-key bits for a thread outside the engine: write-disabled (the engine's data stays readable).
inline uint32_t outside_meta(uint32_t pkru) {
  return g_meta_key ? pkru_with(pkru, g_meta_key, Rights::kRead) : pkru;
}
inline uint32_t inside_meta(uint32_t pkru) {
  return g_meta_key ? pkru_with(pkru, g_meta_key, Rights::kReadWrite) : pkru;
}

}  // namespace mpk

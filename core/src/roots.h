// roots.h - every pointer and number that decides rights, in one page that is read-only once the
// engine has started.
//
// The metadata (groups, keys' rights, threads' rights) lives in the arena, which the metadata key
// closes outside the engine. What leads to it must not be a plain writable global: one stray
// write to the state pointer, the metadata key's number, the backend or a policy hook would turn
// into real grants. So they live in g_roots, a page of its own that roots_seal() makes read-only
// when initialisation ends. A stray write to it faults. The few that change later (the keys the
// engine takes, the program's own keys, the isolation hooks) are written inside a RootsWrite,
// which opens the page for that write only.
// Each thread's pointer to its record (t_self, thread-local) cannot sit in a shared page: the
// engine checks that it points at a record inside the arena before it trusts it (self_rec()).
#pragma once

#include <atomic>
#include <cstdint>

#include "meta_arena.h"

namespace mpk {

struct EngineState;
struct ThreadRecord;

enum class Backend : uint8_t { kNone = 0, kHardware = 1, kSimulated = 2 };

// The policy's answers for isolated regions (isolation.h).
struct IsolationHooks {
  // The right (0 none, 1 read, 2 read-write) a thread has on the isolated region `region`.
  int (*thread_right)(int region, const char *thread_name, const char *start_symbol) = nullptr;
  // Names a start routine (called outside the engine's lock: it may read symbol tables).
  void (*describe_start)(uintptr_t routine, char *buf, size_t len) = nullptr;
};

struct alignas(4096) Roots {
  MetaArena arena;                              // the metadata's home (engine_state.h: g_arena)
  std::atomic<EngineState *> state{nullptr};    // g_state
  int meta_key = 0;                             // g_meta_key
  uint32_t meta_mask = 0;                       // g_meta_mask
  std::atomic<uint32_t> managed_keys{0};        // g_managed_keys
  std::atomic<int> sync_signal{0};              // g_sync_signal
  Backend backend = Backend::kNone;             // key_backend.h: g_backend
  std::atomic<uint32_t> engine_keys{0};         // key_backend.cc
  std::atomic<uint32_t> program_keys{0};        // key_backend.cc
  std::atomic<uint32_t> sim_keys{1u};           // key_backend.cc: the simulated pool
  std::atomic<void *> legacy{nullptr};          // legacy.cc: its LegacyState
  IsolationHooks hooks;                         // isolation.cc
  std::atomic<int> isolated{0};                 // isolation.cc: isolated groups alive
  ThreadRecord *records = nullptr;              // thread_registry.h: the records' array
  uintptr_t heap_lo = 0;                        // region_heap.h: the region heaps' reservation
  size_t heap_len = 0;
  void *region_heaps = nullptr;                 // region_heap.cc: its state, in the arena
};
static_assert(sizeof(Roots) == 4096, "the roots fill exactly one page of their own");

extern constinit Roots g_roots;

// Makes the roots page read-only (when the engine's initialisation is done).
void roots_seal();
// Around fork (the engine's atfork handlers): no write is open while the process is copied.
void roots_fork_prepare();
void roots_fork_parent();
void roots_fork_child();

// Opens the sealed roots page for writing for its lifetime (re-entrant; one writer at a time).
// Never used in a signal handler.
class RootsWrite {
 public:
  RootsWrite();
  ~RootsWrite();
  RootsWrite(const RootsWrite &) = delete;
  RootsWrite &operator=(const RootsWrite &) = delete;

 private:
  bool opened_ = false;  // this one opened the page (the outermost, after the seal)
};

}  // namespace mpk

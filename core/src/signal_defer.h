// signal_defer.h - a program's signal handler never runs inside the engine.
//
// The engine's critical sections hold locks (g_lock, a key's lock) that a handler calling back
// into the engine (mprotect under the shim, mpk_*) would wait for forever on the same thread. A
// thread marks itself inside the engine (EngineEntry) before it takes any lock. A program handler
// the engine wraps (the shim's trampoline) that arrives meanwhile does not run there: its signal
// is recorded, and queued to the thread again, with its siginfo, as the thread leaves the engine,
// where the handler runs as if the signal had come a moment later. A handler the engine does not
// wrap that calls in anyway is refused with EDEADLK (engine_reentered()).
#pragma once

#include <signal.h>

#include <atomic>
#include <cstdint>

namespace mpk {

extern constinit thread_local int t_engine_depth __attribute__((tls_model("initial-exec")));
extern constinit thread_local uint64_t t_deferred_signals __attribute__((tls_model("initial-exec")));

// Queues the signals recorded while the thread was inside the engine (at the outermost exit).
void replay_deferred_signals();

// Ordering: the mark is set before any lock is taken and cleared after the last is released; a
// signal deferred before the mark clears is replayed right after it.
inline void engine_enter() {
  ++t_engine_depth;
  std::atomic_signal_fence(std::memory_order_seq_cst);
}
inline void engine_exit() {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (--t_engine_depth == 0 && t_deferred_signals) replay_deferred_signals();
}
struct EngineEntry {
  EngineEntry() { engine_enter(); }
  ~EngineEntry() { engine_exit(); }
  EngineEntry(const EngineEntry &) = delete;
  EngineEntry &operator=(const EngineEntry &) = delete;
};

// Is the calling thread inside the engine (so that a call into it must not proceed)?
inline bool engine_reentered() { return t_engine_depth > 0; }

// In a wrapped handler: records the signal if the thread is inside the engine. True if it did;
// the handler then returns at once.
bool defer_signal_inside_engine(int sig, const siginfo_t *si);

}  // namespace mpk

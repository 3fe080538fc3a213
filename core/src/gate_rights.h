// gate_rights.h - the rights a call gate gives the calling thread (the shim's [[region.gate]]).
//
// A call into a gated function opens its region's keys read/write for the calling thread, in its
// own PKRU only, until the call returns (or a longjmp or an exception leaves it). Nested gates
// count per key: only the outermost entry and exit write the PKRU, one WRPKRU each. The state is
// thread-local (t_gate_keys, engine_state.h, and per-key depths here), so opening needs no lock,
// no shared write and no metadata access; the thread's own sync handler sees t_gate_keys through
// want_of() and keeps the keys open while a revocation of other rights rewrites the register.
// Async-signal-safe: a handler that enters and leaves gates restores what it changed. Inline: a
// gated call pays for these on the way in and out.
#pragma once

#include <atomic>
#include <cstdint>

#include "cpu.h"
#include "engine_internal.h"

namespace mpk {

// Each key's gate depth in the calling thread (gate_rights.cc).
extern constinit thread_local uint16_t t_gate_depth[kHwKeys] __attribute__((tls_model("initial-exec")));
// A sync handler of this thread ran while a gate rewrote its PKRU: every key is set again.
void gate_settle();

// Ordering, both ways: t_gate_keys is updated before the register is read, so a sync handler of
// this thread that runs in between computes the keys as the write below will; if one ran (its
// acks moved), the write may have put back an older value of another key, and gate_settle()
// computes every key again.

// Opens `keys` for the calling thread (each key's depth + 1). Returns the keys this call opened
// (their depth was 0). Settle is gate_settle, or a caller's way of calling it (the gate stubs'
// keeps the vector registers: gate_runtime.cc).
template <void (*Settle)() = gate_settle>
inline uint32_t gate_open(uint32_t keys) {
  uint32_t opened = 0;
  for (uint32_t m = keys; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    if (t_gate_depth[k]++ == 0) opened |= 1u << k;
  }
  if (!opened) return 0;
  t_gate_keys |= opened;
  ThreadRecord *rec = t_self;  // only its acks are read here; settle() checks the record
  const uint64_t acks = rec ? rec->acks.load(std::memory_order_relaxed) : 0;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  const bool sim = simulated();
  uint32_t v = rdpkru_on(sim);
  for (uint32_t m = opened; m; m &= m - 1) v = pkru_with(v, __builtin_ctz(m), Rights::kReadWrite);
  wrpkru_uncounted(sim, v);
  // Counted here: this write and the one gate_close() makes when the same frame closes the same
  // keys (depths nest, so exactly the keys opened here close there; a longjmp or an exception
  // closes them too). Only a gate still open when the counters are read, or at process exit, is
  // counted with a closing write still to come. Counting both at entry costs nothing measurable;
  // a count on the way out added about 5 ns per gated call (bench-gates, simulated keys).
  wrpkru_count(2);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (rec && rec->acks.load(std::memory_order_relaxed) != acks) [[unlikely]] Settle();
  return opened;
}

// Closes `keys` (each key's depth - 1); a key whose depth reaches 0 goes back to the right the
// state gives the thread. Settle: as for gate_open.
template <void (*Settle)() = gate_settle>
inline void gate_close(uint32_t keys) {
  uint32_t closed = 0;
  for (uint32_t m = keys; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    if (t_gate_depth[k] && --t_gate_depth[k] == 0) closed |= 1u << k;
  }
  if (!closed) return;
  t_gate_keys &= ~closed;
  EngineState *st = state();
  ThreadRecord *rec = st ? self_rec(*st) : nullptr;
  const uint64_t acks = rec ? rec->acks.load(std::memory_order_relaxed) : 0;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  const bool sim = simulated();
  uint32_t v = rdpkru_on(sim);
  for (uint32_t m = closed; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    v = pkru_with(v, k, st ? want_of(*st, rec, k) : Rights::kNone);
  }
  wrpkru_uncounted(sim, v);
  // Not counted here: gate_open() counted this write with its own.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (rec && rec->acks.load(std::memory_order_relaxed) != acks) [[unlikely]] Settle();
}

}  // namespace mpk

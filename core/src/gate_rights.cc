#include "gate_rights.h"

#include <atomic>

#include "cpu.h"
#include "engine_internal.h"
#include "fast_path.h"

namespace mpk {

constinit thread_local uint32_t t_gate_keys __attribute__((tls_model("initial-exec"))) = 0;

namespace {

constinit thread_local uint16_t t_gate_depth[kHwKeys] __attribute__((tls_model("initial-exec"))) = {};

// Writes the PKRU with `keys` set as the state gives the thread (want_of reads t_gate_keys).
// Ordering: t_gate_keys is set before the register is read, so a sync handler that runs in
// between keeps the keys as this write will; if one ran (acks moved), settle() recomputes every
// key, since the write below may have put back an older value of another key.
void apply(uint32_t keys) {
  EngineState *st = state();
  ThreadRecord *rec = st ? self_rec(*st) : nullptr;
  const uint64_t acks = rec ? rec->acks.load(std::memory_order_relaxed) : 0;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  uint32_t v = rdpkru();
  for (uint32_t m = keys; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    v = pkru_with(v, k, st ? want_of(*st, rec, k) : ((t_gate_keys >> k & 1u) ? Rights::kReadWrite : Rights::kNone));
  }
  wrpkru(v);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (rec && rec->acks.load(std::memory_order_relaxed) != acks) settle(*st, rec);
}

}  // namespace

uint32_t gate_open(uint32_t keys) {
  uint32_t opened = 0;
  for (uint32_t m = keys; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    if (t_gate_depth[k]++ == 0) opened |= 1u << k;
  }
  if (!opened) return 0;
  t_gate_keys |= opened;
  apply(opened);
  return opened;
}

void gate_close(uint32_t keys) {
  uint32_t closed = 0;
  for (uint32_t m = keys; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    if (t_gate_depth[k] && --t_gate_depth[k] == 0) closed |= 1u << k;
  }
  if (!closed) return;
  t_gate_keys &= ~closed;
  apply(closed);
}

uint32_t gate_keys() { return t_gate_keys; }

}  // namespace mpk

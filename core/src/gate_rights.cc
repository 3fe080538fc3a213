#include "gate_rights.h"

#include <atomic>

#include "cpu.h"
#include "engine_internal.h"
#include "fast_path.h"

namespace mpk {

constinit thread_local uint32_t t_gate_keys __attribute__((tls_model("initial-exec"))) = 0;

namespace {

constinit thread_local uint16_t t_gate_depth[kHwKeys] __attribute__((tls_model("initial-exec"))) = {};
// Ordering, both ways: t_gate_keys is updated before the register is read, so a sync handler of
// this thread that runs in between computes the keys as the write below will; if one ran (its
// acks moved), the write may have put back an older value of another key, and settle() computes
// every key again.

}  // namespace

uint32_t gate_open(uint32_t keys) {
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
  uint32_t v = rdpkru();
  for (uint32_t m = opened; m; m &= m - 1) v = pkru_with(v, __builtin_ctz(m), Rights::kReadWrite);
  wrpkru(v);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (rec && rec->acks.load(std::memory_order_relaxed) != acks) [[unlikely]]
    if (EngineState *st = state()) settle(*st, self_rec(*st));
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
  EngineState *st = state();
  ThreadRecord *rec = st ? self_rec(*st) : nullptr;
  const uint64_t acks = rec ? rec->acks.load(std::memory_order_relaxed) : 0;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  uint32_t v = rdpkru();
  for (uint32_t m = closed; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    v = pkru_with(v, k, st ? want_of(*st, rec, k) : Rights::kNone);
  }
  wrpkru(v);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (rec && rec->acks.load(std::memory_order_relaxed) != acks) [[unlikely]] settle(*st, rec);
}

uint32_t gate_keys() { return t_gate_keys; }

}  // namespace mpk

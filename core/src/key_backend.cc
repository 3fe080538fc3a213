#include "key_backend.h"

#include <sys/mman.h>

#include <cerrno>

#include "cpu.h"
#include "pkey_gate.h"
#include "tag_bounds.h"
#include "sys.h"

namespace mpk {

constinit thread_local uint32_t t_sim_pkru __attribute__((tls_model("initial-exec"))) = kDefaultPkru;

namespace {

// Simulated keys in use (bit k); key 0 always.
constexpr std::atomic<uint32_t> &g_sim_keys = g_roots.sim_keys;

// The engine's keys and the program's (key_backend.h: engine_keys, note_program_key).
constexpr std::atomic<uint32_t> &g_engine_keys = g_roots.engine_keys;
constexpr std::atomic<uint32_t> &g_prog_keys = g_roots.program_keys;

// Saved PKRU of the engine's handlers running in this thread, innermost last.
constexpr int kMaxFrames = 16;
constinit thread_local uint32_t t_frames[kMaxFrames] __attribute__((tls_model("initial-exec")));
constinit thread_local int t_depth __attribute__((tls_model("initial-exec"))) = 0;

}  // namespace

const char *backend_name(Backend b) {
  switch (b) {
    case Backend::kHardware: return "hardware";
    case Backend::kSimulated: return "simulated";
    default: return "none";
  }
}

uint32_t engine_keys() { return g_engine_keys.load(std::memory_order_acquire); }
uint32_t program_keys() { return g_prog_keys.load(std::memory_order_acquire); }

void note_program_key(int key, bool held) {
  if (key <= 0 || key >= kHwKeys) return;
  uint32_t bit = 1u << key;
  if (((g_prog_keys.load(std::memory_order_acquire) & bit) != 0) == held) return;
  RootsWrite w;
  if (held)
    g_prog_keys.fetch_or(bit, std::memory_order_acq_rel);
  else
    g_prog_keys.fetch_and(~bit, std::memory_order_acq_rel);
}

namespace {

int sim_key_alloc(unsigned flags, unsigned rights);

}  // namespace

int key_alloc(unsigned flags, unsigned rights) {
  int k = simulated() ? sim_key_alloc(flags, rights) : sys::pkey_alloc(flags, rights);
  if (k > 0 && k < kHwKeys) {
    RootsWrite w;
    g_engine_keys.fetch_or(1u << k, std::memory_order_seq_cst);
    // The kernel handed it out, so the program does not hold it (any note saying so is stale: a
    // pkey_free the shim did not see).
    if (!simulated()) {
      note_program_key(k, false);
      pkey_gate_protect(k);  // MPK_SECCOMP=1: raw system calls cannot free or use it either
    }
  }
  return k;
}

namespace {

int sim_key_alloc(unsigned flags, unsigned rights) {
  if (flags || (rights & ~unsigned{PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE})) return -EINVAL;
  uint32_t used = g_sim_keys.load(std::memory_order_relaxed);
  for (;;) {
    // Keys the program holds (real ones, on a CPU with PKU) are never simulated ones too.
    uint32_t free_keys = ~used & ~g_prog_keys.load(std::memory_order_acquire) & 0xfffeu;
    if (!free_keys) return -ENOSPC;
    int k = __builtin_ctz(free_keys);
    bool taken;
    {
      RootsWrite w;
      taken = g_sim_keys.compare_exchange_weak(used, used | (1u << k), std::memory_order_acq_rel);
    }
    if (!taken) continue;
    // As the kernel does: the new key's initial rights land in the calling thread's register.
    Rights r = (rights & PKEY_DISABLE_ACCESS) ? Rights::kNone
               : (rights & PKEY_DISABLE_WRITE) ? Rights::kRead
                                               : Rights::kReadWrite;
    t_sim_pkru = pkru_with(t_sim_pkru, k, r);
    return k;
  }
}

int sim_key_free(int key) {
  if (key <= 0 || key >= kHwKeys) return -EINVAL;
  uint32_t bit = 1u << key;
  RootsWrite w;
  return (g_sim_keys.fetch_and(~bit, std::memory_order_acq_rel) & bit) ? 0 : -EINVAL;
}

}  // namespace

int key_free(int key) {
  int rc = simulated() ? sim_key_free(key) : (int)pkey_gate_call(SYS_pkey_free, key);
  if (rc == 0 && key > 0 && key < kHwKeys) {
    RootsWrite w;
    g_engine_keys.fetch_and(~(1u << key), std::memory_order_seq_cst);
  }
  return rc;
}

int key_mprotect(void *addr, size_t len, int prot, int key) {
  if (key > 0) note_tag_bounds(reinterpret_cast<uintptr_t>(addr), len);
  if (!simulated()) return (int)pkey_gate_call(SYS_pkey_mprotect, (long)addr, (long)len, prot, key);
  if (key < 0 || key >= kHwKeys || (key && !(g_sim_keys.load(std::memory_order_acquire) & (1u << key))))
    return -EINVAL;
  // The page-table half of pkey_mprotect: the same permission change, no key recorded.
  return sys::mprotect(addr, len, prot);
}

// Ordering (both sides): the depth is the last thing changed on entry and the first on exit, with
// the register saved before and restored after, so a signal nested at any point pushes its own
// frame above ours and restores what it found.
HandlerPkru::HandlerPkru() : active_(simulated()) {
  if (!active_) return;
  int d = t_depth;
  if (d < kMaxFrames) t_frames[d] = t_sim_pkru;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_depth = d + 1;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_sim_pkru = kDefaultPkru;  // the kernel starts every handler with the default PKRU
}

HandlerPkru::~HandlerPkru() {
  if (!active_) return;
  int d = t_depth - 1;
  uint32_t saved = d < kMaxFrames ? t_frames[d] : kDefaultPkru;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_depth = d;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_sim_pkru = saved;  // sigreturn restores the frame's PKRU
}

uint32_t *sim_frame_pkru() {
  int d = t_depth;
  return d > 0 && d <= kMaxFrames ? &t_frames[d - 1] : nullptr;
}

int sim_frame_depth() { return t_depth; }

void sim_frames_drop(int depth) {
  if (depth >= 0 && depth < t_depth) t_depth = depth;
}

}  // namespace mpk

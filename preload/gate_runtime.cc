// gate_runtime.cc - what the gate stubs (gate_stubs.S) call: the thread's gate stack and rights.
//
// Each thread has a stack of frames (thread-local, initial-exec: no allocation, usable in signal
// handlers): the caller's return address and rbx (at offsets the stubs' unwind information
// names), the caller's stack pointer (for longjmp) and what the gate opened. Ordering against
// signal handlers of the same thread, which may enter and leave gates themselves: a frame is
// filled before the depth counts it, and read before the depth drops.
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "gate_rights.h"
#include "gates.h"
#include "gates_table.h"
#include "raw_log.h"
#include "sys.h"

// The gate stubs keep the caller's vector registers only across code that leaves them alone:
// this file is built with general registers only, and its rare calls into other code go through
// mpk_call_keeping_vectors (gate_stubs.S), which saves xmm0-7 around them.
extern "C" void mpk_call_keeping_vectors(void (*fn)());

namespace mpk::shim {

namespace {

void settle_keeping_vectors() { mpk_call_keeping_vectors(&gate_settle); }
void claim_hot_slot_now() { claim_hot_slot(); }
// The thread's statistics slot, which the gate's PKRU writes are counted in: claimed out of line
// (with xmm0-7 kept) on the thread's first gated call, and again if the thread gave it up meanwhile
// (it is exiting).
inline void have_hot_slot() {
  if (!t_hot && t_hot_slot < 0) [[unlikely]] mpk_call_keeping_vectors(&claim_hot_slot_now);
}

struct GateFrame {
  uintptr_t ret;        // offset 0: the caller's return address (gate_stubs.S)
  uintptr_t rbx;        // offset 8: the caller's rbx (gate_stubs.S)
  uintptr_t caller_sp;  // the caller's stack pointer after the call returns
  uint32_t keys;        // hardware keys this gate opened the depth of
  int16_t region;
  bool allocate;        // it counts in t_alloc_depth
};
static_assert(offsetof(GateFrame, ret) == 0 && offsetof(GateFrame, rbx) == 8, "gate_stubs.S reads them");

constinit thread_local GateFrame t_frames[kMaxGateDepth] __attribute__((tls_model("initial-exec")));
constinit thread_local int t_depth __attribute__((tls_model("initial-exec"))) = 0;
// The regions whose allocating gates the thread is inside (the heap criterion), and how deep.
constinit thread_local uint16_t t_alloc_depth[cfg::kMaxRegions] __attribute__((tls_model("initial-exec")));
constinit thread_local uint64_t t_alloc_regions __attribute__((tls_model("initial-exec"))) = 0;
constinit thread_local int t_not_for_gates __attribute__((tls_model("initial-exec"))) = 0;

void close_frame(const GateFrame &f) {
  gate_close<settle_keeping_vectors>(f.keys);
  if (f.allocate && f.region >= 0 && t_alloc_depth[f.region] && --t_alloc_depth[f.region] == 0)
    t_alloc_regions &= ~(uint64_t{1} << f.region);
}

// Pops the innermost frame (which is f) and gives the caller's return address.
uintptr_t pop(GateFrame *f) {
  uintptr_t ret = f->ret;
  close_frame(*f);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_depth = static_cast<int>(f - t_frames);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return ret;
}

}  // namespace

uint64_t gate_regions() { return t_not_for_gates ? 0 : t_alloc_regions; }

GateAllocationsOff::GateAllocationsOff() { ++t_not_for_gates; }
GateAllocationsOff::~GateAllocationsOff() { --t_not_for_gates; }

void gates_leave_below(uintptr_t target_sp) {
  // A frame whose caller's stack pointer is at or below the target belongs to a call the jump
  // leaves (the stack grows down).
  while (t_depth > 0 && t_frames[t_depth - 1].caller_sp <= target_sp) pop(&t_frames[t_depth - 1]);
}

}  // namespace mpk::shim

using mpk::shim::GateFrame;

struct GateEnter {
  void *target;
  GateFrame *frame;
};

extern "C" __attribute__((visibility("hidden"))) GateEnter mpk_gate_enter(unsigned index, uintptr_t ret,
                                                                          uintptr_t caller_sp) {
  using namespace mpk::shim;
  const GateTarget &t = gate_target(index);
  int d = t_depth;
  if (d == kMaxGateDepth) {
    mpk::raw_log(mpk::LogLevel::kError, "more than %d nested gated calls in one thread: stopping", kMaxGateDepth);
    mpk::sys::raw(SYS_exit_group, 134);
  }
  GateFrame &f = t_frames[d];
  f.ret = ret;
  f.caller_sp = caller_sp;
  f.region = t.region;
  f.allocate = t.allocate;
  f.keys = gate_region_keys(t.region);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_depth = d + 1;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (t.allocate && t_alloc_depth[t.region]++ == 0) t_alloc_regions |= uint64_t{1} << t.region;
  have_hot_slot();
  mpk::gate_open<settle_keeping_vectors>(f.keys);
  return {t.target, &f};
}

// The gated function returned, or an exception left it (gate_stubs.S calls this from its
// landing pad too): the frame is popped either way.
extern "C" __attribute__((visibility("hidden"))) uintptr_t mpk_gate_exit(GateFrame *f) {
  using namespace mpk::shim;
  have_hot_slot();
  return pop(f);
}

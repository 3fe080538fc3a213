// gates.h - call gates: calls into named functions of a module open an isolated region for the
// calling thread until they return (policy [[region.gate]], config/README.md).
//
// Mechanism: GOT patching. At start-up and after every dlopen, every loaded module's relocations
// (PLT slots, R_X86_64_JUMP_SLOT, and GOT entries of functions whose address is taken,
// R_X86_64_GLOB_DAT) that bind to a gated function defined in another module are rewritten to
// point at a stub (gate_stubs.S) that opens the region, calls the function and closes the region.
// Why not the dynamic linker's audit interface (LD_AUDIT, la_symbind64): it needs a second
// environment variable and library, runs in a separate link-map namespace (its own libc and
// allocator, so the engine's state would not be shared), and makes glibc disable its lazy
// binding optimisations for the whole process. GOT patching needs nothing but the preload, works
// the same for lazily bound and -z now (RELRO) modules (a slot is written with its final target,
// so the lazy resolver never runs for it; a read-only slot is made writable for the write), and
// costs nothing for calls that are not gated.
//
// Not gated: calls inside the defining module (they do not go through its GOT), and addresses
// obtained with dlsym.
#pragma once

#include <cstdint>

#include "policy.h"

namespace mpk::shim {

inline constexpr int kMaxGateStubs = 4096;  // gated functions (gate_stubs.S has as many stubs)
inline constexpr int kMaxGateDepth = 256;   // nested gated calls per thread

// Patches every loaded module for the policy's gates (start-up, after the policy's arena copy;
// again after each dlopen). Reports what it gated once at start-up.
void gates_install(const cfg::Policy &policy);
void gates_refresh();

// A function a gated module registers to be called later by someone else (an atexit handler, a
// thread-specific data destructor) runs inside its module's gate, as its exported functions do:
// the stub that calls fn that way (allocations inside it are not the region's), or fn itself when
// no gate names its module.
void *gates_wrap_callback(void *fn);

// The policy regions whose allocating gates (allocate = true, the default) the calling thread is
// inside (bit i: region i), for heap regions that take allocations made inside their gates.
// Async-signal-safe.
uint64_t gate_regions();

// While one lives, the calling thread's allocations are not its gates' (gate_regions() is 0): a
// C++ exception object made inside a gate outlives it, and is read by the unwinder and the
// handler outside.
struct GateAllocationsOff {
  GateAllocationsOff();
  ~GateAllocationsOff();
};

// A longjmp to a context whose stack pointer is target_sp leaves every gate entered below it:
// they are closed (the thread's rights go back), innermost first.
void gates_leave_below(uintptr_t target_sp);

}  // namespace mpk::shim

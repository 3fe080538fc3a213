// key_backend.h - where the engine's protection keys come from: the CPU, or a simulation.
//
// Backend::kHardware uses the real PKRU register and the kernel's pkey system calls. With
// MPK_SIMULATE=1 (Backend::kSimulated) the whole engine runs on any x86-64 CPU for measurement:
//   - keys come from a pool of 15 (1..15) kept here; pkey_alloc's initial rights are applied to the
//     calling thread's register as the kernel does;
//   - RDPKRU/WRPKRU read and write a per-thread software register (initial-exec TLS), and a new
//     thread starts with its creator's value (thread_start.cc passes it), as clone copies PKRU;
//   - tagging pages with a key is a plain mprotect at the same permission (the page-table work is
//     the same system call; the key is not recorded anywhere);
//   - the kernel's signal-frame PKRU is modelled by HandlerPkru: an engine signal handler starts
//     with the default register, may edit the saved value (frame_pkru() in sync.cc), and the saved
//     value is restored when the handler returns, as sigreturn restores PKRU from the frame.
// What a simulation never does is refuse an access: no protection fault, no lazy grant. Signals,
// acks, membarrier and every system call that is not a key operation are real.
//
// Every PKRU write the engine makes, in either backend, is counted per thread (stats.h: hot
// counters), so a benchmark can price them with a model where the CPU has no PKU.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "roots.h"

namespace mpk {

// Chosen once by engine_init() before any key exists; read on every PKRU access (roots.h).
inline constexpr Backend &g_backend = g_roots.backend;
inline bool simulated() { return g_backend == Backend::kSimulated; }
const char *backend_name(Backend b);

// The simulated register (valid in kSimulated only).
extern constinit thread_local uint32_t t_sim_pkru __attribute__((tls_model("initial-exec")));
constexpr uint32_t kDefaultPkru = 0x55555554u;  // a new process: key 0 open, 1..15 access-disabled

// Key operations on the engine's own keys. Same contract as sys.h (0 or key / -errno).
int key_alloc(unsigned flags, unsigned rights);
int key_free(int key);
int key_mprotect(void *addr, size_t len, int prot, int key);

// Who holds which key, for the shim's interposers of the program's own pkey calls
// (preload/interpose_pkey.cc). Lock-free, allocation-free, async-signal-safe.
// - engine_keys(): every key key_alloc() returned and key_free() did not take back, set before
//   key_alloc() returns. To the program these keys look unallocated.
// - program keys: keys the program allocated through the shim and has not freed. The simulated
//   pool never hands one out (on hardware the kernel's own allocation map already guarantees it).
uint32_t engine_keys();
inline bool engine_key(long key) { return key > 0 && key < 16 && ((engine_keys() >> key) & 1u); }
void note_program_key(int key, bool held);
uint32_t program_keys();

// Simulated signal frames. Constructed first thing in every signal handler the engine installs
// and destroyed last; no-ops on hardware. Nesting is allowed (a signal inside a handler).
class HandlerPkru {
 public:
  HandlerPkru();
  ~HandlerPkru();
  HandlerPkru(const HandlerPkru &) = delete;
  HandlerPkru &operator=(const HandlerPkru &) = delete;

 private:
  bool active_;
};
// The innermost simulated frame's saved PKRU, or null outside a HandlerPkru.
uint32_t *sim_frame_pkru();
// How many simulated frames are open; a longjmp out of handlers drops those above `depth` without
// restoring their PKRU (no sigreturn runs).
int sim_frame_depth();
void sim_frames_drop(int depth);

}  // namespace mpk

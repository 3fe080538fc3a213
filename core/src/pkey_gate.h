// pkey_gate.h - optional (MPK_SECCOMP=1): a seccomp filter so that even a raw `syscall`
// instruction in the program cannot free the engine's keys or tag pages with them.
//
// The interposers (preload/interpose_pkey.cc) cover glibc's pkey_* and syscall(); code that
// issues the instruction itself bypasses them. With MPK_SECCOMP=1, each key the engine takes
// adds a small seccomp filter (all threads, SECCOMP_FILTER_FLAG_TSYNC): pkey_free(key) and
// pkey_mprotect(..., key) (x86-64, x32 and i386 numbers) are answered EINVAL, as for a key nobody
// allocated, unless they come from the engine's own syscall instruction (the gate: a page the
// engine maps at kGateAddress). A pkey_mprotect the kernel would refuse or answer before it
// looks at the key (empty, unaligned, wrapping range, bad prot) is let through, so its answer is
// the kernel's own and exact.
//
// Off by default, because a seccomp filter cannot be removed and outlives exec:
// - every program exec'd later by this process or its children keeps the filters: its own
//   pkey_free/pkey_mprotect of a key with one of those numbers fails with EINVAL, unless it runs
//   under the shim with MPK_SECCOMP=1 too (its gate is at the same address);
// - a process that is not privileged (no CAP_SYS_ADMIN) must set no_new_privs to install a
//   filter, which also outlives exec: setuid/setgid bits and file capabilities of programs exec'd
//   later are ignored;
// - every system call of the process runs through one filter per engine key (a few dozen BPF
//   instructions each).
// It stops accidents, not an attacker: code in the process can call the gate or write PKRU.
#pragma once

#include <cstdint>

namespace mpk {

// The gate's fixed address (the same in every process, so that a filter inherited across exec
// recognises a shim's gate there).
constexpr uintptr_t kGateAddress = 0x100000000000ul;  // 16 TiB

// MPK_SECCOMP=1 in the environment and the gate mapped (decided once, on first use).
bool pkey_gate_enabled();
// A pkey system call (SYS_pkey_free or SYS_pkey_mprotect) from the gate when it is enabled,
// else a plain raw system call. Returns the kernel's result (>= 0 or -errno).
long pkey_gate_call(long nr, long a = 0, long b = 0, long c = 0, long d = 0);
// Adds the filter for a key the engine has just taken. 0, or -errno (the key is then guarded by
// the interposers only; a warning is logged).
int pkey_gate_protect(int key);

}  // namespace mpk

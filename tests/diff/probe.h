// probe.h - one-byte user-mode loads and stores that survive their own faults.
//
// Each probe is a single instruction written in assembly with a label before and after it. The
// SIGSEGV/SIGBUS handler checks that the fault came from one of those instructions, records the
// fault in thread-local state and resumes after the instruction: no longjmp, so the interrupted
// context (and whatever the kernel restores with it) comes back exactly as it was.
// A fault anywhere else is a real crash: the handler reports the op that was running and lets
// the default action kill the process.
#pragma once

#include <cstdint>

namespace mpkdiff {

struct ProbeResult {
  bool faulted = false;
  int signo = 0;       // SIGSEGV or SIGBUS
  int code = 0;        // si_code
  uintptr_t addr = 0;  // si_addr
  uint8_t value = 0;   // loads: the byte read
};

// Installs the handler for SIGSEGV and SIGBUS (SA_SIGINFO). Call once, before any probe.
void install_fault_handlers();

ProbeResult probe_load(const void *p);
ProbeResult probe_store(void *p, uint8_t value);

// The text an unexpected fault prints, so a crash names the op that caused it. The pointer must
// stay valid until replaced.
void set_running_op(const char *text);

}  // namespace mpkdiff

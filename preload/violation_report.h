// violation_report.h - what the shim says when a thread touches an isolated region it has no
// right to: one JSON line to the policy's log and one line for a person on stderr.
#pragma once

#include <signal.h>

#include "isolation.h"

namespace mpk::shim {

// Reports the fault: a JSON line to the log, a line on stderr. Async-signal-safe apart from
// libunwind's symbol lookup.
// this access site has been reported before (audit reports each site once).
void report_violation(const IsolationFault &f, siginfo_t *si, void *uctx);
// Loads libunwind for backtraces (start-up only: it calls dlopen).
void unwinder_init();
// Audit mode: true the first time this instruction address faults on an isolated region (for
// this thread name and kind of access when learning: `who` is thread_key(), else 0).
bool first_at_site(uintptr_t ip, uint64_t who, bool write);
// The calling thread's name as a number (a hash of /proc/thread-self/comm).
uint64_t thread_key();

}  // namespace mpk::shim

// probe.cc - the probe instructions and the fault handler that steps over them.
#include "probe.h"

#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

extern "C" {
// Return the loaded byte / 1; a faulting probe returns with %eax as set before the instruction.
int mpk_diff_load(const void *p);
int mpk_diff_store(void *p, int value);
extern const char mpk_diff_load_insn[], mpk_diff_load_resume[];
extern const char mpk_diff_store_insn[], mpk_diff_store_resume[];
}

asm(R"(
    .text
    .p2align 4
    .globl mpk_diff_load, mpk_diff_load_insn, mpk_diff_load_resume
    .hidden mpk_diff_load, mpk_diff_load_insn, mpk_diff_load_resume
    .type mpk_diff_load, @function
mpk_diff_load:
    xorl %eax, %eax
mpk_diff_load_insn:
    movb (%rdi), %al
mpk_diff_load_resume:
    ret
    .size mpk_diff_load, .-mpk_diff_load

    .p2align 4
    .globl mpk_diff_store, mpk_diff_store_insn, mpk_diff_store_resume
    .hidden mpk_diff_store, mpk_diff_store_insn, mpk_diff_store_resume
    .type mpk_diff_store, @function
mpk_diff_store:
    movl $1, %eax
mpk_diff_store_insn:
    movb %sil, (%rdi)
mpk_diff_store_resume:
    ret
    .size mpk_diff_store, .-mpk_diff_store
)");

namespace mpkdiff {
namespace {

struct FaultState {
  volatile int signo;
  volatile int code;
  volatile uintptr_t addr;
};
// Initial-exec TLS of the executable itself: safe to touch from a signal handler.
thread_local FaultState t_fault;
std::atomic<const char *> g_running_op{""};

void write_str(const char *s) {
  ssize_t ignored = write(STDERR_FILENO, s, std::strlen(s));
  (void)ignored;
}

void on_fault(int signo, siginfo_t *si, void *context) {
  auto *uc = static_cast<ucontext_t *>(context);
  greg_t &rip = uc->uc_mcontext.gregs[REG_RIP];
  const auto at = reinterpret_cast<const char *>(rip);
  if (at == mpk_diff_load_insn) {
    rip = reinterpret_cast<greg_t>(mpk_diff_load_resume);
  } else if (at == mpk_diff_store_insn) {
    rip = reinterpret_cast<greg_t>(mpk_diff_store_resume);
  } else {
    write_str(signo == SIGBUS ? "mpk_diff: SIGBUS" : "mpk_diff: SIGSEGV");
    write_str(" outside a probe, while running: ");
    write_str(g_running_op.load(std::memory_order_relaxed));
    write_str("\n");
    // Returning re-executes the faulting instruction, which now takes the default action.
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    sigaction(signo, &dfl, nullptr);
    return;
  }
  t_fault.code = si->si_code;
  t_fault.addr = reinterpret_cast<uintptr_t>(si->si_addr);
  t_fault.signo = signo;
}

ProbeResult collect() {
  ProbeResult r;
  r.signo = t_fault.signo;
  r.faulted = r.signo != 0;
  r.code = t_fault.code;
  r.addr = t_fault.addr;
  return r;
}

}  // namespace

void install_fault_handlers() {
  struct sigaction sa = {};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

ProbeResult probe_load(const void *p) {
  t_fault.signo = 0;
  int v = mpk_diff_load(p);
  ProbeResult r = collect();
  r.value = static_cast<uint8_t>(v);
  return r;
}

ProbeResult probe_store(void *p, uint8_t value) {
  t_fault.signo = 0;
  mpk_diff_store(p, value);
  return collect();
}

void set_running_op(const char *text) { g_running_op.store(text, std::memory_order_relaxed); }

}  // namespace mpkdiff

#include "self_check.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "libc_real.h"
#include "sync.h"
#include "sys.h"

namespace mpk {

namespace {

enum class Probe { kEditFrame, kWriteInHandler, kInitState };

// Set by the prober before each signal, read and written by its handler (same thread).
volatile Probe g_probe = Probe::kEditFrame;
volatile uint32_t g_expect_in_frame = 0;  // the interrupted PKRU
volatile uint32_t g_write = 0;            // what the handler writes (frame or register)
const char *volatile g_problem = nullptr;
// MPK_SELFCHECK_BREAK=1 (for tests): the handler makes no edit, as a kernel that drops frame
// edits would behave; the engine must then refuse to start.
volatile bool g_break = false;

void probe_handler(int, siginfo_t *, void *uctx) {
  if (const char *why = frame_layout_problem(uctx)) {
    g_problem = why;
    return;
  }
  uint32_t in_frame = 0;
  frame_pkru_read(uctx, &in_frame);
  if (in_frame != g_expect_in_frame) {
    g_problem = "the frame's PKRU slot does not hold the interrupted PKRU";
    return;
  }
  if (g_break) return;
  if (g_probe == Probe::kWriteInHandler)
    wrpkru(g_write);
  else
    frame_pkru_write(uctx, g_write);
}

// Sends sig to this thread with PKRU = before; the handler does its part. Returns the PKRU the
// thread has after sigreturn.
uint32_t round_trip(int sig, Probe p, uint32_t before, uint32_t write) {
  g_probe = p;
  g_expect_in_frame = before;
  g_write = write;
  wrpkru(before);
  sys::tgkill(sys::getpid(), sys::gettid(), sig);
  return rdpkru();
}

}  // namespace

const char *pkru_self_check(int sig, int key) {
  const char *brk = getenv("MPK_SELFCHECK_BREAK");
  g_break = brk && brk[0] == '1';
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = probe_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (real_sigaction(sig, &sa, &old) != 0) return "cannot install the self-check's signal handler";
  sigset_t unblock, saved_mask;
  sigemptyset(&unblock);
  sigaddset(&unblock, sig);
  sys::raw(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&unblock, (long)&saved_mask, sizeof(long));

  const uint32_t start = rdpkru();
  // Two values that differ only on `key` (the engine's own key: no program memory carries it).
  const uint32_t open = pkru_with(start, key, Rights::kReadWrite);
  const uint32_t closed = pkru_with(start, key, Rights::kNone);
  g_problem = nullptr;
  const char *why = nullptr;
  if (round_trip(sig, Probe::kEditFrame, open, closed) != closed && !g_problem)
    why = "an edit of the PKRU in a signal frame does not survive sigreturn";
  if (!why && !g_problem && round_trip(sig, Probe::kEditFrame, closed, open) != open)
    why = "an edit of the PKRU in a signal frame does not survive sigreturn";
  if (!why && !g_problem && round_trip(sig, Probe::kWriteInHandler, closed, open) != closed)
    why = "a WRPKRU inside a signal handler outlives the handler";
  // WRPKRU(0) is PKRU's init value: XSAVE may record it as "init" (XSTATE_BV[PKRU] clear).
  if (!why && !g_problem && round_trip(sig, Probe::kEditFrame, 0, closed) != closed)
    why = "a handler entered with PKRU in its init state cannot set the PKRU sigreturn restores";
  if (!why && !g_problem && round_trip(sig, Probe::kWriteInHandler, 0, closed) != 0)
    why = "after a handler entered with PKRU in its init state, sigreturn does not restore it";
  if (!why) why = g_problem;

  wrpkru(start);
  sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, (long)&saved_mask, 0, sizeof(long));
  real_sigaction(sig, &old, nullptr);
  return why;
}

}  // namespace mpk

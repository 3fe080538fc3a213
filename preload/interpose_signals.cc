// interpose_signals.cc - signals under the shim.
//
// Three duties:
// 1. SIGSEGV belongs to the shim. Its handler first tries a lazy grant (a thread touching a group
//    it may access, whose PKRU is behind the state: sync.h, lazy_grant); anything else is the
//    program's own fault and reaches the program's SIGSEGV disposition as mprotect would have
//    raised it: a key fault on a shim key is reported as SEGV_ACCERR.
// 2. The program's handlers run with their thread's rights on the shim's keys (a handler starts
//    with the default PKRU, where every key is closed): a trampoline adopts the thread's rights
//    first. The sync signal is blocked inside them (sync.h: sync_mask_handler says why).
// 3. Neither SIGSEGV nor the sync signal can be blocked for real: a lazy grant needs SIGSEGV, a
//    revocation needs the sync signal. The program's wish to block SIGSEGV is remembered per
//    thread and honoured when a real fault arrives (the default action, as the kernel would do).
//
// sigaction() and signal() report the program's own handlers, never the shim's.
#include <dlfcn.h>
#include <signal.h>
#include <sys/ucontext.h>

#include <atomic>
#include <cstring>

#include "engine_state.h"
#include "libc_real.h"
#include "legacy.h"
#include "raw_log.h"
#include "shim.h"
#include "signal_defer.h"
#include "stats.h"
#include "stats_page.h"
#include "isolation.h"
#include "sync.h"
#include "sys.h"
#include "policy_hooks.h"
#include "violation_report.h"

namespace mpk::shim {

namespace {

// The program's action for a signal whose kernel handler is the shim's. Two copies and an index:
// a writer fills the copy not in use and flips the index, so a handler reads a whole action.
struct ProgramAction {
  std::atomic<bool> managed{false};
  std::atomic<int> cur{0};
  struct sigaction act[2];
};
constinit ProgramAction g_actions[NSIG];
constinit std::atomic_flag g_sig_lock = ATOMIC_FLAG_INIT;
constinit std::atomic<bool> g_installed{false};

}  // namespace

constinit thread_local uint64_t t_handlers_run __attribute__((tls_model("initial-exec"))) = 0;

namespace {

// Does the program (not the kernel) block SIGSEGV in this thread right now?
constinit thread_local bool t_segv_blocked __attribute__((tls_model("initial-exec"))) = false;

struct SigLock {
  SigLock() {
    while (g_sig_lock.test_and_set(std::memory_order_acquire)) sys::sched_yield();
  }
  ~SigLock() { g_sig_lock.clear(std::memory_order_release); }
};

struct sigaction read_action(int sig) {
  ProgramAction &p = g_actions[sig];
  return p.act[p.cur.load(std::memory_order_acquire)];
}

void store_action(int sig, const struct sigaction &a) {
  ProgramAction &p = g_actions[sig];
  int next = 1 - p.cur.load(std::memory_order_relaxed);
  p.act[next] = a;
  p.cur.store(next, std::memory_order_release);
  p.managed.store(true, std::memory_order_release);
}

bool is_function(const struct sigaction &a) {
  return a.sa_handler != SIG_DFL && a.sa_handler != SIG_IGN;
}

void call_program_handler(const struct sigaction &a, int sig, siginfo_t *si, void *uc) {
  if (a.sa_flags & SA_SIGINFO)
    a.sa_sigaction(sig, si, uc);
  else
    a.sa_handler(sig);
}

// The program handlers running on this thread, innermost last (t_handler_depth of them; the
// first kMaxHandlerFrames recorded): where each was called from, so that a longjmp out of one
// (siglongjmp from a SIGSEGV handler is a common way back) ends it as its return would have.
struct HandlerFrame {
  uintptr_t sp;       // an address in the calling wrapper's frame
  bool segv_blocked;  // t_segv_blocked before the handler
  int sim_depth;      // the simulated signal frames (key_backend.h) including the wrapper's
};
constexpr int kMaxHandlerFrames = 32;
constinit thread_local HandlerFrame t_handler_frames[kMaxHandlerFrames] __attribute__((tls_model("initial-exec")));

// Calls the program's handler for sig, counted in t_handler_depth while it runs. segv_blocked:
// t_segv_blocked to restore afterwards.
[[gnu::noinline]] void run_program_handler(const struct sigaction &a, int sig, siginfo_t *si, void *uc,
                                           bool segv_blocked) {
  int d = t_handler_depth;
  if (d < kMaxHandlerFrames)
    t_handler_frames[d] = HandlerFrame{reinterpret_cast<uintptr_t>(__builtin_frame_address(0)), segv_blocked,
                                       sim_frame_depth()};
  // Ordering: the frame is recorded before the depth counts it (a nested handler pushes above).
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_handler_depth = d + 1;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  ++t_handlers_run;
  call_program_handler(a, sig, si, uc);
  t_handler_depth = d;
}

void trampoline(int sig, siginfo_t *si, void *uc) {
  HandlerPkru frame;  // first: models the kernel's PKRU handling for simulated keys
  // The thread was inside the engine: the handler runs when it leaves (signal_defer.h).
  if (defer_signal_inside_engine(sig, si)) return;
  int saved = errno;
  adopt_thread_rights(uc);
  struct sigaction a = read_action(sig);
  if (a.sa_flags & SA_RESETHAND) g_actions[sig].managed.store(false, std::memory_order_release);
  bool was_blocked = t_segv_blocked;
  if (sigismember(&a.sa_mask, SIGSEGV)) t_segv_blocked = true;
  errno = saved;
  if (is_function(a)) run_program_handler(a, sig, si, uc, was_blocked);
  saved = errno;
  t_segv_blocked = was_blocked;
  errno = saved;
}

// The default action for a SIGSEGV: restore it in the kernel; a fault re-executes and ends the
// process as it would have without the shim, a sent signal is sent again.
void default_action(siginfo_t *si) {
  stats_page_unshare();  // the process ends: no file left in /dev/shm (async-signal-safe: unlink)
  struct sigaction dfl = default_disposition();
  real_sigaction(SIGSEGV, &dfl, nullptr);
  if (si->si_code <= 0) sys::tgkill(sys::getpid(), sys::gettid(), SIGSEGV);
}

void fault_handler(int sig, siginfo_t *si, void *uc) {
  HandlerPkru frame;  // first: models the kernel's PKRU handling for simulated keys
  int saved = errno;
  // The handler starts with the default PKRU, which closes the metadata key; it reads the state.
  // sigreturn restores the interrupted PKRU, so this lasts only as long as the handler.
  wrpkru(outside_meta(rdpkru()));
  if (si->si_code == SEGV_PKUERR) {
    bool granted;
    {
      HandlerRunning running;  // the shim's own work only: a program handler may jump out
      granted = lazy_grant(si->si_pkey, uc);
    }
    if (granted) {
      errno = saved;
      return;
    }
    IsolationFault f;
    if (isolation_fault_info(si->si_pkey, &f)) {
      bump(stats().violations);
      auto *ucp = static_cast<ucontext_t *>(uc);
      uintptr_t ip = static_cast<uintptr_t>(ucp->uc_mcontext.gregs[REG_RIP]);
      if (!f.audit) {
        report_violation(f, si, uc);
        default_action(si);  // enforce: the access re-executes and the program ends with SIGSEGV
        errno = saved;
        return;
      }
      bool write = (ucp->uc_mcontext.gregs[REG_ERR] & 2) != 0;
      if (first_at_site(ip, learning() ? thread_key() : 0, write)) report_violation(f, si, uc);
      if (learning() && isolation_learn_grant(si->si_pkey, write, uc)) {
        errno = saved;
        return;
      }
      if (isolation_step_open(si->si_pkey, uc)) {  // audit: this one access goes through
        errno = saved;
        return;
      }
    }
    if (legacy_owns_key(si->si_pkey)) {
      // The program's own protection fault on memory it mprotect()ed: report it as the page
      // table would have.
      si->si_code = SEGV_ACCERR;
      si->si_pkey = 0;
      bump(stats().violations);
    }
  }
  if (log_level() >= LogLevel::kDebug) {
    uint32_t frame = 0;
    frame_pkru_read(uc, &frame);
    MPK_LOG(kDebug, "SIGSEGV in thread %d: code %d key %d address %p, PKRU at the fault %x, ip %p", sys::gettid(),
            si->si_code, si->si_code == SEGV_PKUERR ? (int)si->si_pkey : -1, si->si_addr, frame,
            (void *)static_cast<ucontext_t *>(uc)->uc_mcontext.gregs[REG_RIP]);
  }
  bool sent = si->si_code <= 0;
  struct sigaction a;
  if (g_actions[SIGSEGV].managed.load(std::memory_order_acquire)) {
    a = read_action(SIGSEGV);
  } else {
    a = default_disposition();
  }
  if (t_segv_blocked && !sent) {
    default_action(si);  // the kernel kills a thread that faults with SIGSEGV blocked
  } else if (t_segv_blocked) {
    MPK_LOG(kDebug, "SIGSEGV sent to a thread that blocks it; dropped");
  } else if (sent && defer_signal_inside_engine(sig, si)) {
    // A sent SIGSEGV that interrupted the engine: the handler runs when the thread leaves it.
  } else if (is_function(a)) {
    adopt_thread_rights(uc);
    if (a.sa_flags & SA_RESETHAND) {
      store_action(SIGSEGV, default_disposition());
    }
    // The program's handler runs with the mask the kernel would have given it: the interrupted
    // context's, its own and SIGSEGV. The sync signal stays blocked (sync_mask_handler); the other
    // asynchronous signals, blocked for the shim's work until here (signals_install), open again.
    uint64_t mask, own, old;  // the kernel's 64-bit masks
    std::memcpy(&mask, &static_cast<ucontext_t *>(uc)->uc_sigmask, sizeof mask);
    std::memcpy(&own, &a.sa_mask, sizeof own);
    mask |= own | uint64_t{1} << (SIGSEGV - 1);
    if (int s = sync_signal_number()) mask |= uint64_t{1} << (s - 1);
    bool was_blocked = t_segv_blocked;
    if (sigismember(&a.sa_mask, SIGSEGV)) t_segv_blocked = true;
    sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, (long)&old, sizeof(long));
    errno = saved;
    run_program_handler(a, sig, si, uc, was_blocked);
    saved = errno;
    sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, sizeof(long));
    t_segv_blocked = was_blocked;
  } else if (a.sa_handler == SIG_IGN && sent) {
    // ignored, as the kernel would
  } else {
    default_action(si);
  }
  errno = saved;
}

// SIGTRAP: the end of an audit step (isolation.h), else the program's own trap.
void trap_handler(int sig, siginfo_t *si, void *uc) {
  HandlerPkru frame;  // first: models the kernel's PKRU handling for simulated keys
  int saved = errno;
  wrpkru(outside_meta(rdpkru()));
  if (isolation_step_close(uc)) {
    errno = saved;
    return;
  }
  struct sigaction a;
  if (g_actions[SIGTRAP].managed.load(std::memory_order_acquire)) {
    a = read_action(SIGTRAP);
  } else {
    a = default_disposition();
  }
  if (is_function(a)) {
    adopt_thread_rights(uc);
    run_program_handler(a, sig, si, uc, t_segv_blocked);
  } else if (a.sa_handler == SIG_DFL || si->si_code > 0) {
    // The default action; also for a real trap (not a sent SIGTRAP) while the program ignores
    // SIGTRAP, which the kernel does not let it ignore.
    struct sigaction dfl = default_disposition();
    real_sigaction(SIGTRAP, &dfl, nullptr);
    sys::tgkill(sys::getpid(), sys::gettid(), SIGTRAP);
  }
  errno = saved;
}

constinit std::atomic<bool> g_trap_owned{false};

bool shim_signals_on() { return g_installed.load(std::memory_order_acquire); }
// Signals whose kernel handler stays the shim's; the program's action is kept in g_actions.
bool owned(int sig) {
  return sig == SIGSEGV || (sig == SIGTRAP && g_trap_owned.load(std::memory_order_acquire));
}

}  // namespace

void handlers_leave_below(uintptr_t target_sp) {
  if (t_handler_depth <= 0) return;
  // The alternate stack, if this thread has one: a handler frame on it is left by a jump to a
  // stack pointer that is not on it, whatever the two addresses' order.
  stack_t ss{};
  bool alt = sys::raw(SYS_sigaltstack, 0, (long)&ss) == 0 && !(ss.ss_flags & SS_DISABLE);
  auto on_alt = [&](uintptr_t p) {
    auto lo = reinterpret_cast<uintptr_t>(ss.ss_sp);
    return alt && p >= lo && p < lo + ss.ss_size;
  };
  while (t_handler_depth > 0) {
    int d = t_handler_depth - 1;
    if (d >= kMaxHandlerFrames) {
      --t_handler_depth;  // not recorded: taken as left with the recorded one below it
      continue;
    }
    const HandlerFrame &f = t_handler_frames[d];
    // The stack grows down: a target above the handler's caller is outside the handler.
    if (!(f.sp < target_sp || (on_alt(f.sp) && !on_alt(target_sp)))) break;
    t_segv_blocked = f.segv_blocked;
    // The simulated signal frame of its wrapper goes without restoring its PKRU, as a real
    // longjmp leaves the handler's PKRU in place (no sigreturn).
    sim_frames_drop(f.sim_depth - 1);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t_handler_depth = d;
  }
}

namespace {
// What the program starts with for sig, before the shim takes it over, stays the program's: a
// handler, or SIG_IGN (which survives exec: sigaction must report it, and a sent sig is ignored).
void keep_starting_action(int sig) {
  struct sigaction old;
  if (real_sigaction(sig, nullptr, &old) == 0 && (is_function(old) || old.sa_handler == SIG_IGN))
    store_action(sig, old);
}
}  // namespace

void signals_install(bool audit_steps) {
  SigLock l;
  if (audit_steps) {
    keep_starting_action(SIGTRAP);
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = trap_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sync_mask_handler(&sa);
    if (real_sigaction(SIGTRAP, &sa, nullptr) == 0) g_trap_owned.store(true, std::memory_order_release);
  }
  keep_starting_action(SIGSEGV);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = fault_handler;
  // SA_ONSTACK: a program that set up an alternate stack for stack overflows keeps it.
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  // No program handler for another signal runs inside the shim's work here (sync.h).
  fill_async_signals(&sa.sa_mask);
  // Ordering: a sync taken inside this handler would edit this handler's frame, not the
  // interrupted context's; blocked here, it arrives right after, where its edit lasts.
  sync_mask_handler(&sa);
  if (real_sigaction(SIGSEGV, &sa, nullptr) != 0) {
    MPK_LOG(kError, "cannot install the SIGSEGV handler: errno %d", errno);
    return;
  }
  g_installed.store(true, std::memory_order_release);
  altstack_enable();
}

bool strip_mask(int how, const sigset_t *in, sigset_t *out) {
  if (!sync_signal_number() && !shim_signals_on()) return false;  // pass-through: the program's own
  if (!read_sigset(in, out)) return false;
  if (int s = sync_signal_number()) sigdelset(out, s);
  if (!shim_signals_on()) return true;
  bool segv = sigismember(in, SIGSEGV);
  if (how == SIG_BLOCK && segv) t_segv_blocked = true;
  if (how == SIG_UNBLOCK && segv) t_segv_blocked = false;
  if (how == SIG_SETMASK) t_segv_blocked = segv;
  sigdelset(out, SIGSEGV);
  return true;
}

bool segv_view() { return shim_signals_on() && t_segv_blocked; }
void set_segv_view(bool blocked) { t_segv_blocked = blocked; }

}  // namespace mpk::shim

using namespace mpk;
using namespace mpk::shim;

MPK_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
  int sync = sync_signal_number();
  if (sync && sig == sync && act) {
    MPK_LOG(kWarn, "refusing a handler for signal %d: the shim uses it to synchronize threads (MPK_SYNC_SIGNAL)", sig);
    errno = EINVAL;
    return -1;
  }
  if (!shim_signals_on() || sig < 1 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP) {
    if (!act || !sync) return real_sigaction(sig, act, old);
    struct sigaction masked = *act;
    sync_mask_handler(&masked);
    return real_sigaction(sig, &masked, old);
  }
  SigLock l;
  struct sigaction prev;
  bool managed = g_actions[sig].managed.load(std::memory_order_acquire);
  if (managed) {
    prev = read_action(sig);
  } else if (owned(sig)) {
    // The kernel holds the shim's handler; the program has set none: its action is the default
    // (reporting the shim's handler would have a program that restores it call it as its own).
    prev = default_disposition();
  } else if (real_sigaction(sig, nullptr, &prev) != 0) {
    return -1;
  }
  if (act) {
    if (owned(sig)) {
      store_action(sig, *act);  // the kernel keeps the shim's handler
    } else if (!is_function(*act)) {
      if (real_sigaction(sig, act, nullptr) != 0) return -1;
      g_actions[sig].managed.store(false, std::memory_order_release);
    } else {
      struct sigaction k = *act;
      k.sa_sigaction = trampoline;
      k.sa_flags |= SA_SIGINFO;
      sync_mask_handler(&k);
      sigdelset(&k.sa_mask, SIGSEGV);
      store_action(sig, *act);
      if (real_sigaction(sig, &k, nullptr) != 0) {
        int e = errno;
        g_actions[sig].managed.store(managed, std::memory_order_release);
        if (managed) store_action(sig, prev);
        errno = e;
        return -1;
      }
    }
  }
  if (old) {
    *old = prev;
    if (sync) sigdelset(&old->sa_mask, sync);
  }
  return 0;
}

MPK_EXPORT sighandler_t signal(int sig, sighandler_t handler) { return signal_via(sigaction, sig, handler); }

namespace {
using mask_fn = int (*)(int, const sigset_t *, sigset_t *);

// The program's view of the old mask is taken before the new mask changes it; a call the kernel
// rejects leaves the view as it was.
int masked_call(mask_fn real, int how, const sigset_t *set, sigset_t *old) {
  bool before = segv_view();
  int rc;
  if (set && (how == SIG_BLOCK || how == SIG_UNBLOCK || how == SIG_SETMASK)) {
    sigset_t fixed;
    rc = real(how, strip_mask(how, set, &fixed) ? &fixed : set, old);
    if (rc != 0) set_segv_view(before);
  } else {
    rc = real(how, set, old);
  }
  if (rc == 0 && old && before) sigaddset(old, SIGSEGV);
  return rc;
}
}  // namespace

MPK_EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *old) {
  return masked_call(MPK_REAL(sigprocmask), how, set, old);
}

MPK_EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *old) {
  return masked_call(MPK_REAL(pthread_sigmask), how, set, old);
}

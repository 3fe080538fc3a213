#include "signal_defer.h"

#include <cstring>

#include "sys.h"

namespace mpk {

constinit thread_local int t_engine_depth __attribute__((tls_model("initial-exec"))) = 0;
constinit thread_local uint64_t t_deferred_signals __attribute__((tls_model("initial-exec"))) = 0;

namespace {
// The siginfo of the first deferred signal; others are queued again without theirs (standard
// signals coalesce anyway; two different real-time signals inside one engine call are rare).
constinit thread_local int t_info_sig __attribute__((tls_model("initial-exec"))) = 0;
constinit thread_local siginfo_t t_info __attribute__((tls_model("initial-exec")));
}  // namespace

bool defer_signal_inside_engine(int sig, const siginfo_t *si) {
  if (t_engine_depth == 0 || sig < 1 || sig > 64) return false;
  if (!t_info_sig && si) {
    std::memcpy(&t_info, si, sizeof t_info);
    t_info_sig = sig;
  }
  t_deferred_signals |= uint64_t{1} << (sig - 1);
  return true;
}

void replay_deferred_signals() {
  // Taken first: a signal arriving during the replay (the thread is outside the engine now) runs
  // its handler directly.
  uint64_t m = t_deferred_signals;
  int info_sig = t_info_sig;
  siginfo_t info;
  if (info_sig) std::memcpy(&info, &t_info, sizeof info);
  t_deferred_signals = 0;
  t_info_sig = 0;
  const int pid = sys::getpid(), tid = sys::gettid();
  for (; m; m &= m - 1) {
    int sig = __builtin_ctzll(m) + 1;
    // To its own process the kernel takes any siginfo: the handler sees the original one.
    if (sig == info_sig && sys::raw(SYS_rt_tgsigqueueinfo, pid, tid, sig, (long)&info) == 0) continue;
    sys::tgkill(pid, tid, sig);
  }
}

}  // namespace mpk

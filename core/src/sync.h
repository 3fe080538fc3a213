// sync.h - making every thread's PKRU agree with the engine's state.
//
// Grants and revocations of a key must hold in every thread before the engine returns. The engine
// updates the state (key rights, domains), then sync_keys() adds the changed keys to the pending
// set of exactly the threads whose PKRU holds more than they should now (or, for eager keys,
// differs), signals them with tgkill, and calls membarrier(PRIVATE_EXPEDITED) so that running
// targets pass through the kernel at once. Each target's handler takes its pending keys, rewrites
// the PKRU saved in its signal frame (sigreturn restores it) and acks. A signal that lands inside
// a signal handler (one the engine wrapped, or glibc's SIGCANCEL/SIGSETXID handlers) is deferred:
// that frame's PKRU does not last, so the keys stay pending and the revoker signals again until
// one lands in the thread's own code. sync_keys() returns once every target took its keys, exited,
// or was found unable to take the signal (it blocks it, or does not answer within the deadline):
// those are counted as failures and the caller moves the affected group back to the page table,
// which the kernel enforces for all threads at once.
#pragma once

#include <signal.h>

#include <cstdint>

#include "engine_state.h"

namespace mpk {

// Installs the handler for st.sync_signal and registers for membarrier. Returns 0 or -errno.
int sync_install(EngineState &st);
// The program's own signal handlers run with the sync signal blocked. A handler starts with the
// default PKRU and its sigreturn restores the PKRU saved when it was entered; a sync taken inside it
// would edit only the handler's frame and be undone on return. Blocked, the sync signal is taken
// right after the handler returns, in the interrupted context, whose PKRU is the one that lasts.
// sync_install() applies this to handlers that exist; sync_mask_handler() to a new one.
void sync_mask_handler(struct sigaction *act);
// Sync signals this thread has taken (a waiting call that only they interrupted is resumed).
extern constinit thread_local uint64_t t_syncs_taken __attribute__((tls_model("initial-exec")));
// The sync signal, or 0 before initialisation.
int sync_signal_number();
// Re-registers what a fork child needs.
void sync_after_fork(EngineState &st);
// The caller has already updated the state (KeyState.rights, domains, isolation rights) and holds
// the lock of every key in `keys` (a bit mask of hardware keys), or g_lock where the key is being
// loaded or released. Signals the threads whose PKRU must change: on a lazy key those among its
// holders that hold more than the state gives them; on an eager key every live thread that holds
// anything else. Returns true when every one of them took the change. may_reap: the caller holds
// g_lock, so records of threads found dead are freed here.
bool sync_keys(EngineState &st, uint32_t keys, ThreadRecord *self, bool may_reap = true);
// The PKRU saved in a signal frame (restored by sigreturn). False / no-op without an XSAVE image.
bool frame_pkru_read(void *uctx, uint32_t *out);
void frame_pkru_write(void *uctx, uint32_t v);
// Null if a hardware signal frame has the XSAVE layout the frame edits rely on (magic numbers,
// PKRU present, PKRU's CPUID offset inside the image, the image's end marker where its size says);
// else what is wrong.
const char *frame_layout_problem(void *uctx);
// Fault handler helper (lazy grants): a protection fault on hardware key `key` in the thread whose
// signal frame is `uctx`. If the state gives this thread more access on that key than the PKRU
// saved in the frame, raises that key alone in the frame (the access is retried on sigreturn) and
// returns true. False: the fault is the program's own. Async-signal-safe.
bool lazy_grant(int key, void *uctx);
// For a program's signal handler (which starts with the default PKRU): gives the calling thread the
// rights its interrupted context holds on the engine's keys (the frame's PKRU); other keys keep the
// handler's defaults, as without the engine. Async-signal-safe.
void adopt_thread_rights(void *uctx);
// Registers the calling thread, whose PKRU the engine never set: it counts as a holder of every
// key until it next leaves the engine or takes a sync. Lock-free; nullptr if the table is full.
ThreadRecord *register_unknown(EngineState &st);
// Drops a thread's domain pins and holder bits and frees its record (thread gone). Caller holds
// g_lock.
void reap_thread(EngineState &st, ThreadRecord *r);

// Every asynchronous signal, for the mask of the shim's own handlers (the sync handler, the
// SIGSEGV handler): no program handler runs inside the shim's work there, so none can jump out of
// it and leave a HandlerRunning mark set. The fault signals stay open: the kernel kills a thread
// that faults with its fault signal blocked.
void fill_async_signals(sigset_t *set);

// The shim's own work in a signal handler runs on the calling thread, from construction to
// destruction (the sync handler; a lazy grant). Handlers' masks carry the sync signal, so
// meanwhile the thread blocks it: a revoker that finds it blocking waits for the work to end (up
// to its overall limit) instead of judging after 20 ms that the thread blocks the signal for
// good, which a thread preempted there on a loaded machine would otherwise be taken for. Never
// around a program's handler, which may jump out and leave the mark set.
class HandlerRunning {
 public:
  HandlerRunning();
  ~HandlerRunning();
  HandlerRunning(const HandlerRunning &) = delete;
  HandlerRunning &operator=(const HandlerRunning &) = delete;

 private:
  int slot_;
};

}  // namespace mpk

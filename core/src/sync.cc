#include "sync.h"

#include <fcntl.h>
#include <linux/membarrier.h>
#include <signal.h>
#include <sys/ucontext.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include "engine_internal.h"
#include "libc_real.h"
#include "raw_log.h"
#include "stats.h"
#include "sys.h"

namespace mpk {

constinit thread_local uint64_t t_syncs_taken __attribute__((tls_model("initial-exec"))) = 0;

namespace {
// The shim's handlers running on each thread, by record index. Outside the metadata (a fault
// handler runs with it closed); not a right: a wrong count only changes how long a revoker waits.
constinit std::atomic<uint16_t> g_handlers_running[ThreadRegistry::kMaxThreads] = {};
}  // namespace

void fill_async_signals(sigset_t *set) {
  sigfillset(set);
  for (int s : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS}) sigdelset(set, s);
}

HandlerRunning::HandlerRunning() : slot_(-1) {
  // Only compared, never read through: t_self may be anything (the roots page is not).
  const ThreadRecord *r = t_self, *base = g_roots.records;
  if (r && base && r >= base && r < base + ThreadRegistry::kMaxThreads) {
    slot_ = static_cast<int>(r - base);
    g_handlers_running[slot_].fetch_add(1, std::memory_order_relaxed);
  }
}

HandlerRunning::~HandlerRunning() {
  if (slot_ >= 0) g_handlers_running[slot_].fetch_sub(1, std::memory_order_relaxed);
}

namespace {

constexpr uint32_t kFpXstateMagic1 = 0x46505853u;
constexpr int kSwBytesOffset = 464;   // struct _fpx_sw_bytes inside the legacy FXSAVE area
constexpr int kXstateBvOffset = 512;  // XSAVE header: XSTATE_BV
constexpr int kPkruFeature = 9;

// Points at the PKRU slot of the XSAVE image in a signal frame, marking PKRU present; null if the
// frame has no usable XSAVE image.
uint32_t *frame_pkru(void *uctx) {
  if (simulated()) return sim_frame_pkru();
  auto *uc = static_cast<ucontext_t *>(uctx);
  auto *fp = reinterpret_cast<unsigned char *>(uc->uc_mcontext.fpregs);
  uint32_t off = cpu_info().pkru_xsave_offset;
  if (!fp || !off) return nullptr;
  uint32_t magic1;
  uint64_t xfeatures;
  std::memcpy(&magic1, fp + kSwBytesOffset, 4);
  std::memcpy(&xfeatures, fp + kSwBytesOffset + 8, 8);
  if (magic1 != kFpXstateMagic1 || !(xfeatures & (uint64_t{1} << kPkruFeature))) return nullptr;
  // A clear XSTATE_BV bit would make sigreturn load PKRU's init value (0: every key open); once we
  // write the slot the bit must be set so the value we wrote is the one restored.
  uint64_t bv;
  std::memcpy(&bv, fp + kXstateBvOffset, 8);
  if (!(bv & (uint64_t{1} << kPkruFeature))) {
    uint32_t zero = 0;
    std::memcpy(fp + off, &zero, 4);
    bv |= uint64_t{1} << kPkruFeature;
    std::memcpy(fp + kXstateBvOffset, &bv, 8);
  }
  return reinterpret_cast<uint32_t *>(fp + off);
}

// Did the sync signal interrupt a signal handler rather than the thread's own code?
// - a program handler the engine wrapped and counts (t_handler_depth), which normally blocks the
//   sync signal but may unblock it;
// - glibc's own handlers for SIGCANCEL and SIGSETXID, installed behind every wrapper: glibc never
//   lets a program block those two signals, so an interrupted mask holding one of them is the
//   mask of their handler (which blocks its own signal while it runs).
bool interrupted_a_handler(void *uctx) {
  if (t_handler_depth > 0) return true;
  // Read as the kernel's 64-bit mask: glibc's set functions refuse its internal signals.
  uint64_t m;
  std::memcpy(&m, &static_cast<ucontext_t *>(uctx)->uc_sigmask, sizeof m);
  constexpr uint64_t kGlibcInternal = uint64_t{3} << 31;  // signals 32 and 33: SIGCANCEL, SIGSETXID
  return (m & kGlibcInternal) != 0;
}

void sync_handler(int, siginfo_t *, void *uctx) {
  HandlerPkru frame;
  HandlerRunning running;
  ++t_syncs_taken;
  int saved_errno = errno;
  // Handlers start with the default PKRU (every non-zero key disabled); open the metadata key for
  // this handler only. sigreturn restores the PKRU in the frame, so this write does not leak.
  wrpkru(inside_meta(rdpkru()));
  EngineState *st = g_state.load(std::memory_order_acquire);
  ThreadRecord *rec = st ? self_rec(*st) : nullptr;
  if (st && !rec) {
    rec = st->threads.find(sys::gettid());
    t_self = rec;
  }
  if (st && rec && interrupted_a_handler(uctx)) {
    // This frame is not the one the thread resumes its own code with: the handler it interrupted
    // returns to an outer frame whose PKRU sigreturn restores, undoing any edit made here. Not
    // applied, not acked: the revoker sees `deferred` move and signals again until the signal
    // lands in the outermost context (as glibc repeats its setxid broadcast).
    rec->deferred.fetch_add(1, std::memory_order_seq_cst);
    errno = saved_errno;
    return;
  }
  if (st && rec) {
    // Inside the engine's slow paths the thread applies `pending` itself on the way out (leave).
    if (rec->in_lib.load(std::memory_order_seq_cst) == 0) {
      uint32_t *slot = frame_pkru(uctx);
      if (!slot) {
        MPK_LOG(kError, "sync signal: no PKRU in the signal frame; this thread keeps its rights");
        errno = saved_errno;
        return;  // no ack: the engine falls back to the page table
      }
      uint32_t keys = rec->pending.exchange(0, std::memory_order_seq_cst);
      uint32_t v = *slot, exact = exact_keys(*st);
      for (uint32_t m = keys; m; m &= m - 1) {
        int k = __builtin_ctz(m);
        const Rights frame_r = pkru_rights(v, k);
        // A lazy key is only ever lowered here: a thread gains rights by its own actions.
        auto target = [&] {
          Rights r = want_of(*st, rec, k);
          return !(exact >> k & 1u) && r > frame_r ? frame_r : r;
        };
        // Ordering: held[] is stored (with the holder bit, and held_fence() where due) before the
        // state is read again. The revoker that waited for this handler may already be making
        // the next change: it either reads the held[] stored here and signals again, or this
        // loop reads its change and applies that too.
        Rights r = target();
        for (;;) {
          auto had = static_cast<Rights>(rec->held[k].load(std::memory_order_relaxed));
          note_held(*st, rec, k, r);
          if (r > had || (r < had && (exact >> k & 1u))) held_fence(*st);
          Rights now = target();
          if (now == r) break;
          r = now;
        }
        v = pkru_with(v, k, r);
      }
      *slot = v;
    }
    rec->acks.fetch_add(1, std::memory_order_seq_cst);
  }
  errno = saved_errno;
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Reads /proc/self/task/<tid>/<file> into buf, NUL-terminated (no allocation). False if it
// cannot (the thread is gone).
bool read_task_file(int tid, const char *file, char *buf, long cap) {
  char path[64];
  format_to(path, sizeof path, "/proc/self/task/%d/%s", tid, file);
  int fd = sys::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  long n = sys::read(fd, buf, cap - 1);
  sys::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

// Does thread tid block signal sig? Reads SigBlk from /proc.
bool blocks_signal(int tid, int sig) {
  char buf[4096];
  if (!read_task_file(tid, "status", buf, sizeof buf)) return false;
  const char *p = std::strstr(buf, "SigBlk:");
  if (!p) return false;
  p += 7;
  while (*p == ' ' || *p == '\t') ++p;
  uint64_t mask = 0;
  for (; *p; ++p) {
    int d = (*p >= '0' && *p <= '9') ? *p - '0' : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10 : -1;
    if (d < 0) break;
    mask = mask << 4 | unsigned(d);
  }
  return (mask >> (sig - 1)) & 1u;
}

// Sends the sync signal to a target unless one is in flight already (sent but neither applied
// nor deferred by its handler): real-time signals queue, and a thread that blocks the signal
// must not collect thousands. `sent` is written by revokers only, one at a time per target in
// practice; a lost increment only sends one more signal. 0, or -errno from tgkill.
int signal_unless_in_flight(ThreadRecord &r, int pid, int tid, int sig) {
  uint64_t sent = r.sent.load(std::memory_order_relaxed);
  if (sent > r.acks.load(std::memory_order_acquire) + r.deferred.load(std::memory_order_acquire)) return 0;
  int rc = sys::tgkill(pid, tid, sig);
  if (rc != 0) return rc;
  // Not a plain store: the record may have been released meanwhile (its thread exited; fast
  // paths hold no lock), and a count carried into its next thread would hold back its signals.
  r.sent.compare_exchange_strong(sent, sent + 1, std::memory_order_relaxed);
  bump(stats().revocation_signals);
  return 0;
}

// Sends the sync signal whatever `sent` says, and counts exactly one in flight from now. For a
// target that has not answered for a while: a revoker that raced with the record's release may
// have left a count there that no signal will ever match, and this heals it (an extra signal is
// only an empty sync).
void signal_again(ThreadRecord &r, int pid, int tid, int sig) {
  uint64_t answered = r.acks.load(std::memory_order_acquire) + r.deferred.load(std::memory_order_acquire);
  if (sys::tgkill(pid, tid, sig) != 0) return;
  r.sent.store(answered + 1, std::memory_order_relaxed);
  bump(stats().revocation_signals);
}

// Is thread tid stopped or traced (state T or t in /proc)?
bool thread_stopped(int tid) {
  char buf[512];
  if (!read_task_file(tid, "stat", buf, sizeof buf)) return false;
  // "tid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
  const char *p = std::strrchr(buf, ')');
  return p && p[1] == ' ' && (p[2] == 'T' || p[2] == 't');
}

}  // namespace

bool frame_pkru_read(void *uctx, uint32_t *out) {
  uint32_t *slot = frame_pkru(uctx);
  if (!slot) return false;
  *out = *slot;
  return true;
}

const char *frame_layout_problem(void *uctx) {
  auto *uc = static_cast<ucontext_t *>(uctx);
  auto *fp = reinterpret_cast<unsigned char *>(uc->uc_mcontext.fpregs);
  if (!fp) return "the signal frame has no FPU state";
  uint32_t magic1, xstate_size, magic2;
  uint64_t xfeatures;
  std::memcpy(&magic1, fp + kSwBytesOffset, 4);
  std::memcpy(&xfeatures, fp + kSwBytesOffset + 8, 8);
  std::memcpy(&xstate_size, fp + kSwBytesOffset + 16, 4);
  if (magic1 != kFpXstateMagic1) return "the signal frame has no XSAVE image";
  if (!(xfeatures & (uint64_t{1} << kPkruFeature))) return "the signal frame's XSAVE image has no PKRU";
  uint32_t off = cpu_info().pkru_xsave_offset;
  if (!off || off + 4 > xstate_size) return "PKRU's XSAVE offset lies outside the frame's XSAVE image";
  std::memcpy(&magic2, fp + xstate_size, 4);
  constexpr uint32_t kFpXstateMagic2 = 0x46505845u;
  if (magic2 != kFpXstateMagic2) return "the frame's XSAVE size disagrees with its end marker";
  return nullptr;
}

void frame_pkru_write(void *uctx, uint32_t v) {
  if (uint32_t *slot = frame_pkru(uctx)) *slot = v;
}

bool lazy_grant(int key, void *uctx) {
  EngineState *st = g_state.load(std::memory_order_acquire);
  if (!st || key <= 0 || key >= kHwKeys || !(st->managed_mask.load(std::memory_order_acquire) & (1u << key)))
    return false;
  // The handler runs with the default PKRU: open the metadata key to read and note the state;
  // sigreturn restores the frame's PKRU, so this does not outlive the handler.
  uint32_t entry = rdpkru();
  wrpkru(inside_meta(entry));
  ThreadRecord *rec = self_rec(*st);
  if (!rec) rec = t_self = register_unknown(*st);
  bool granted = false;
  uint32_t *slot = frame_pkru(uctx);
  if (rec && slot) {
    Rights have = pkru_rights(*slot, key);
    if (want_of(*st, rec, key) > have) {
      // Only this key (a thread holds what it uses, nothing more). Noted before it is granted,
      // and the state read again after: a concurrent revoker either sees this thread among the
      // key's holders or has already lowered what it reads here (note_held).
      note_held(*st, rec, key, want_of(*st, rec, key));
      held_fence(*st);
      Rights r = want_of(*st, rec, key);
      *slot = pkru_with(*slot, key, r);
      rec->held[key].store(static_cast<uint8_t>(r), std::memory_order_seq_cst);
      granted = r > have;
      if (granted) bump(stats().lazy_grants);
    }
  }
  wrpkru(entry);
  return granted;
}

void adopt_thread_rights(void *uctx) {
  EngineState *st = g_state.load(std::memory_order_acquire);
  if (!st) return;
  // A program handler runs with the rights its interrupted context holds on the engine's keys
  // (the frame's PKRU), no more: it becomes a holder of nothing new. Other keys keep the
  // handler's defaults, as without the engine.
  uint32_t entry = rdpkru(), frame;
  if (!frame_pkru_read(uctx, &frame)) return;
  uint32_t v = entry;
  // The handler's PKRU closes the metadata key: only what lives outside the arena is read here.
  for (uint32_t m = g_managed_keys.load(std::memory_order_acquire); m; m &= m - 1) {
    int k = __builtin_ctz(m);
    v = pkru_with(v, k, pkru_rights(frame, k));
  }
  wrpkru(outside_meta(v));
}

constinit thread_local int t_handler_depth __attribute__((tls_model("initial-exec"))) = 0;

uint32_t with_wanted(const EngineState &st, uint32_t base, const ThreadRecord *rec, uint32_t keys) {
  for (uint32_t m = keys; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    base = pkru_with(base, k, want_of(st, rec, k));
  }
  return base;
}

uint32_t lowered_to_state(const EngineState &st, uint32_t base, const ThreadRecord *rec) {
  for (uint32_t m = st.managed_mask.load(std::memory_order_acquire); m; m &= m - 1) {
    int k = __builtin_ctz(m);
    Rights w = want_of(st, rec, k);
    if (pkru_rights(base, k) > w) base = pkru_with(base, k, w);
  }
  return base;
}

// Ordering: a thread that gains a right stores held[k] and its holder bit (seq_cst, then
// held_fence()) before it reads the state again and writes its PKRU; a revoker stores the key's
// new rights before it reads the holders and their held[] (publish(), fast_path.cc). So either the revoker sees this thread as a
// holder, or this thread reads the lowered right. Lowering needs no such care: a held[] that is
// briefly above the register only costs a signal.
// The bit is set even when it looks set already: a revoker may be clearing it right now (it
// clears bits of threads that hold nothing, then looks at held[] again: sync_keys).
void note_held(EngineState &st, ThreadRecord *rec, int k, Rights r) {
  rec->held[k].store(static_cast<uint8_t>(r), std::memory_order_seq_cst);
  if (r == Rights::kNone) return;
  st.keys[k].holders[rec->word()].fetch_or(rec->bit(), std::memory_order_seq_cst);
}

uint32_t pkru_from_state(EngineState &st, ThreadRecord *rec, uint32_t keys) {
  bool raised = false;
  for (uint32_t m = keys; m; m &= m - 1) {
    int k = __builtin_ctz(m);
    Rights r = want_of(st, rec, k);
    if (static_cast<uint8_t>(r) > rec->held[k].load(std::memory_order_relaxed)) {
      note_held(st, rec, k, r);
      raised = true;
    }
  }
  if (raised) held_fence(st);
  return lowered_to_state(st, with_wanted(st, rdpkru(), rec, keys), rec);
}

bool note_held_all(EngineState &st, ThreadRecord *rec, uint32_t pkru, bool may_lower) {
  const uint32_t exact = exact_keys(st);
  bool due = false;
  for (uint32_t m = st.managed_mask.load(std::memory_order_acquire); m; m &= m - 1) {
    int k = __builtin_ctz(m);
    auto r = static_cast<uint8_t>(pkru_rights(pkru, k));
    uint8_t have = rec->held[k].load(std::memory_order_relaxed);
    if (r > have || (may_lower && r < have)) {
      note_held(st, rec, k, static_cast<Rights>(r));
      due |= r > have || (exact >> k & 1u);
    }
  }
  return due;
}

void held_fence(const EngineState &st) {
  if (st.membarrier_ok) sys::membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
}

bool pkru_agrees(const EngineState &st, const ThreadRecord *rec, uint32_t v) {
  const uint32_t exact = exact_keys(st);
  for (uint32_t m = st.managed_mask.load(std::memory_order_acquire); m; m &= m - 1) {
    int k = __builtin_ctz(m);
    Rights want = want_of(st, rec, k), have = pkru_rights(v, k);
    if ((exact >> k & 1u) ? have != want : have > want) return false;
  }
  return true;
}

ThreadRecord *register_unknown(EngineState &st) {
  ThreadRecord *r = st.threads.add(sys::gettid());
  if (!r) return nullptr;
  // What this thread's PKRU holds is unknown (it was created with its creator's, or before the
  // engine started): it counts as holding everything until its first sync or engine exit.
  for (int k = 1; k < kHwKeys; ++k) note_held(st, r, k, Rights::kReadWrite);
  held_fence(st);
  bump(stats().threads_registered);
  return r;
}

int sync_install(EngineState &st) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = sync_handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  fill_async_signals(&sa.sa_mask);
  if (real_sigaction(st.sync_signal, &sa, nullptr) != 0) return -errno;
  g_sync_signal.store(st.sync_signal, std::memory_order_release);
  // Handlers installed before now get the sync signal added to their mask (sync_mask_handler()).
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction old;
    if (sig == st.sync_signal || sig == SIGKILL || sig == SIGSTOP || real_sigaction(sig, nullptr, &old) != 0)
      continue;
    if (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN) continue;
    sigaddset(&old.sa_mask, st.sync_signal);
    real_sigaction(sig, &old, nullptr);
  }
  int cmds = sys::membarrier(MEMBARRIER_CMD_QUERY, 0);
  st.membarrier_ok = cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
                     sys::membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0;
  if (!st.membarrier_ok) MPK_LOG(kInfo, "membarrier unavailable: syncs wait for each thread's ack");
  return 0;
}

int sync_signal_number() { return g_sync_signal.load(std::memory_order_acquire); }

void sync_mask_handler(struct sigaction *act) {
  int sig = sync_signal_number();
  if (sig && act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN) sigaddset(&act->sa_mask, sig);
}

void sync_after_fork(EngineState &st) {
  if (st.membarrier_ok) st.membarrier_ok = sys::membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0;
  // Biased key locks need membarrier to be taken back; the child has one thread, so dropping
  // every bias here races with nothing.
  if (!st.membarrier_ok)
    for (KeyState &ks : st.keys) ks.bias.store(0, std::memory_order_relaxed);
}

void reap_thread(EngineState &st, ThreadRecord *r) {
  for (int k = 1; k < kHwKeys; ++k) {
    if (r->dom[k].load(std::memory_order_relaxed)) {
      KeyLock kl(st, k);
      if (st.keys[k].pins.load(std::memory_order_relaxed)) st.keys[k].pins.fetch_sub(1, std::memory_order_relaxed);
    }
    st.keys[k].holders[r->word()].fetch_and(~(r->bit()), std::memory_order_seq_cst);
  }
  st.threads.remove(r);
}

bool sync_keys(EngineState &st, uint32_t keys, ThreadRecord *self, bool may_reap) {
  if (!keys) return true;
  // Eager keys must reach every thread (grants too); lazy ones only threads that hold more.
  const uint32_t eager = keys & exact_keys(st);

  // Who to look at: the union of the keys' holder sets, and every live thread for eager keys.
  const int kWords = st.threads.words();
  uint64_t cand[ThreadRegistry::kMaxThreads / 64];
  const std::atomic<uint64_t> *live = st.threads.live_set();
  uint64_t others = 0;
  const uint64_t self_bit = self ? self->bit() : 0;
  for (int w = 0; w < kWords; ++w) {
    uint64_t b = eager ? live[w].load(std::memory_order_seq_cst) : 0;
    for (uint32_t m = keys & ~eager; m; m &= m - 1) b |= st.keys[__builtin_ctz(m)].holders[w].load(std::memory_order_seq_cst);
    cand[w] = b;
    others |= self && w == self->word() ? b & ~self_bit : b;
  }
  if (!others) return true;  // nobody but the caller: the common case of a single-threaded toggle

  struct Target {
    ThreadRecord *rec;
    int tid;
    uint32_t need;           // the keys this sync left in its pending set
    uint64_t blocked_since;  // ns into the wait when first seen blocking the signal; 0 not seen
  };
  constexpr int kBatch = 256;
  Target targets[kBatch];
  bool ok = true;
  int pid = 0;
  int next_word = 0;  // the candidates are taken in batches of kBatch targets

  // The state was updated before this scan (seq_cst): a thread skipped because it is inside the
  // engine finds its pending keys on its way out (engine_core.cc: leave).
  for (bool more = true; more;) {
    int n = 0;
    more = false;
    for (; next_word < kWords && !more; ++next_word) {
      for (uint64_t &b = cand[next_word]; b;) {
        if (n == kBatch) {
          more = true;
          break;
        }
        ThreadRecord &r = *st.threads.at(next_word * 64 + __builtin_ctzll(b));
        b &= b - 1;
        // Read once: without g_lock (the fast paths) a record can be freed, and reused, meanwhile.
        const int tid = r.tid.load(std::memory_order_acquire);
        if (&r == self || tid <= 0) continue;
        uint32_t need = 0;
        for (uint32_t m = keys; m; m &= m - 1) {
          int k = __builtin_ctz(m);
          auto held = static_cast<Rights>(r.held[k].load(std::memory_order_seq_cst));
          Rights want = want_of(st, &r, k);
          if (held == Rights::kNone && !(eager & (1u << k))) {
            // Holds nothing on k: it leaves k's holders, so later revocations do not even look at
            // its record (which it writes on its own fast path). Then held[] is read again: a
            // thread that gained the right meanwhile has set its bit again, or is seen here.
            std::atomic<uint64_t> &w = st.keys[k].holders[r.word()];
            const uint64_t bit = r.bit();
            w.fetch_and(~bit, std::memory_order_seq_cst);
            held = static_cast<Rights>(r.held[k].load(std::memory_order_seq_cst));
            if (held != Rights::kNone) w.fetch_or(bit, std::memory_order_seq_cst);
          }
          // Lazy grants: a thread that holds no more than it should is left alone; its next
          // access faults and lazy_grant() repairs it.
          if ((eager & (1u << k)) ? held != want : held > want) need |= 1u << k;
        }
        if (!need) continue;
        if (!pid) {
          pid = sys::getpid();
          bump(stats().sync_rounds);
        }
        r.pending.fetch_or(need, std::memory_order_seq_cst);
        if (r.in_lib.load(std::memory_order_seq_cst) != 0) continue;
        int rc = signal_unless_in_flight(r, pid, tid, st.sync_signal);
        if (rc == -ESRCH) {
          if (may_reap) reap_thread(st, &r);
          continue;
        }
        if (rc != 0) {
          ok = false;
          continue;
        }
        targets[n++] = Target{&r, tid, need, 0};
      }
      if (more) break;
    }
    if (!n) continue;
    if (st.membarrier_ok) sys::membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);

    // Wait for the acks. A target that keeps the signal blocked fails: checked from /proc every
    // 2 ms after a 2 ms grace period, and failed once seen blocking 20 ms apart. Blocking is
    // normally brief (glibc's own windows, a thread inside a signal handler, which blocks the
    // sync signal, preempted there); a thread that blocks it for good stalls only this long.
    const uint64_t start = now_ns();
    int pending = n;
    uint64_t next_check = 2000000;
    while (pending) {
      pending = 0;
      for (int i = 0; i < n; ++i) {
        Target &t = targets[i];
        if (!t.rec) continue;
        // Done once the target took this sync's keys out of its pending set: its handler (which
        // writes the frame's PKRU before the thread runs its own code again), or leave() on its
        // way out of the engine's slow path, which it entered before the handler ran.
        if ((t.rec->pending.load(std::memory_order_seq_cst) & t.need) == 0 ||
            t.rec->in_lib.load(std::memory_order_seq_cst) != 0 ||
            t.rec->tid.load(std::memory_order_acquire) != t.tid) {
          t.rec = nullptr;
          continue;
        }
        // Still pending with no signal in flight: the last one was taken inside a handler and
        // deferred, or it applied what was pending just before this sync added its keys.
        signal_unless_in_flight(*t.rec, pid, t.tid, st.sync_signal);
        ++pending;
      }
      if (!pending) break;
      uint64_t waited = now_ns() - start;
      if (waited > next_check) {
        next_check = waited + 2000000;
        for (int i = 0; i < n; ++i) {
          Target &t = targets[i];
          if (!t.rec) continue;
          if (sys::tgkill(pid, t.tid, 0) == -ESRCH) {
            if (may_reap && t.rec->tid.load() == t.tid) reap_thread(st, t.rec);
            t.rec = nullptr;
          } else if (g_handlers_running[t.rec->index()].load(std::memory_order_relaxed)) {
            // Blocking while a handler of the shim's runs: it answers once that returns.
            t.blocked_since = 0;
          } else if (!blocks_signal(t.tid, st.sync_signal)) {
            t.blocked_since = 0;
            signal_again(*t.rec, pid, t.tid, st.sync_signal);
          } else if (!t.blocked_since) {
            t.blocked_since = waited;
          } else if (waited - t.blocked_since > 20000000) {
            MPK_LOG(kDebug, "thread %d blocks the sync signal", t.tid);
            ok = false;
            t.rec = nullptr;
          }
        }
        continue;
      }
      if (waited > 200000000) {
        // 200 ms: a stopped or traced thread will not answer; one that is only waiting for a CPU
        // (a loaded machine) or in an uninterruptible sleep is given up to 2 s.
        bool any = false;
        for (int i = 0; i < n; ++i) {
          Target &t = targets[i];
          if (!t.rec) continue;
          if (waited < 2000000000ull && !thread_stopped(t.tid)) {
            any = true;
            continue;
          }
          MPK_LOG(kWarn, "thread %d did not answer a sync", t.tid);
          ok = false;
          t.rec = nullptr;
        }
        if (!any) break;
      }
      sys::sched_yield();
    }
  }
  if (!ok) bump(stats().sync_fallbacks);
  return ok;
}

}  // namespace mpk

// pkey_test_util.cc - probes, fault accounting, smaps and PKRU readers for the hardware suite.
#include "pkey_test_util.h"

#include <cpuid.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>

// ---- the probes, in assembly so the faulting instruction and the resume point are known -------
extern "C" {
int mpkt_probe_read(const void *p);          // returns the byte; -1 if the load faulted
int mpkt_probe_write(void *p, int v);        // returns 1; 0 if the store faulted
extern const char mpkt_probe_read_insn[];
extern const char mpkt_probe_read_resume[];
extern const char mpkt_probe_write_insn[];
extern const char mpkt_probe_write_resume[];
}

asm(R"(
    .text
    .p2align 4
    .globl mpkt_probe_read
    .hidden mpkt_probe_read
    .type mpkt_probe_read, @function
mpkt_probe_read:
    xorl %eax, %eax
    .globl mpkt_probe_read_insn
    .hidden mpkt_probe_read_insn
mpkt_probe_read_insn:
    movzbl (%rdi), %eax
    .globl mpkt_probe_read_resume
    .hidden mpkt_probe_read_resume
mpkt_probe_read_resume:
    ret
    .size mpkt_probe_read, .-mpkt_probe_read

    .p2align 4
    .globl mpkt_probe_write
    .hidden mpkt_probe_write
    .type mpkt_probe_write, @function
mpkt_probe_write:
    movl $1, %eax
    .globl mpkt_probe_write_insn
    .hidden mpkt_probe_write_insn
mpkt_probe_write_insn:
    movb %sil, (%rdi)
    .globl mpkt_probe_write_resume
    .hidden mpkt_probe_write_resume
mpkt_probe_write_resume:
    ret
    .size mpkt_probe_write, .-mpkt_probe_write
)");

namespace mpkt {
namespace {

struct ThreadFaults {
  uint64_t count;
  int fault_code;
  int fault_pkey;
  void *fault_addr;
  const void *exec_target;  // probe_exec: a fetch fault at this address returns INT32_MIN
};
__attribute__((tls_model("initial-exec"))) thread_local ThreadFaults t_faults;

struct sigaction g_prev_segv;
std::once_flag g_handler_once;

void raw_message(const char *s) {
  ssize_t r = write(2, s, strlen(s));
  (void)r;
}

void format_hex(char *out, uint64_t v) {  // 16 hex digits, async-signal-safe
  static const char digits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) {
    out[i] = digits[v & 15];
    v >>= 4;
  }
  out[16] = 0;
}

void segv_handler(int sig, siginfo_t *si, void *ctx) {
  int saved_errno = errno;
  auto *uc = static_cast<ucontext_t *>(ctx);
  greg_t rip = uc->uc_mcontext.gregs[REG_RIP];
  bool is_read = rip == reinterpret_cast<greg_t>(mpkt_probe_read_insn);
  bool is_write = rip == reinterpret_cast<greg_t>(mpkt_probe_write_insn);
  bool is_exec = t_faults.exec_target != nullptr &&
                 rip == reinterpret_cast<greg_t>(t_faults.exec_target);
  if (is_read || is_write || is_exec) {
    t_faults.count++;
    t_faults.fault_code = si->si_code;
    t_faults.fault_pkey = si->si_code == kSegvPkuErr ? static_cast<int>(si->si_pkey) : -1;
    t_faults.fault_addr = si->si_addr;
    if (is_read) {
      uc->uc_mcontext.gregs[REG_RAX] = -1;
      uc->uc_mcontext.gregs[REG_RIP] = reinterpret_cast<greg_t>(mpkt_probe_read_resume);
    } else if (is_write) {
      uc->uc_mcontext.gregs[REG_RAX] = 0;
      uc->uc_mcontext.gregs[REG_RIP] = reinterpret_cast<greg_t>(mpkt_probe_write_resume);
    } else {  // emulate the callee's `ret`
      greg_t rsp = uc->uc_mcontext.gregs[REG_RSP];
      uc->uc_mcontext.gregs[REG_RIP] = *reinterpret_cast<greg_t *>(rsp);
      uc->uc_mcontext.gregs[REG_RSP] = rsp + 8;
      uc->uc_mcontext.gregs[REG_RAX] = static_cast<uint32_t>(INT32_MIN);
    }
    errno = saved_errno;
    return;
  }
  // Not ours: the previous handler (the library's, or nothing).
  if ((g_prev_segv.sa_flags & SA_SIGINFO) && g_prev_segv.sa_sigaction != nullptr &&
      reinterpret_cast<void *>(g_prev_segv.sa_sigaction) != reinterpret_cast<void *>(SIG_DFL) &&
      reinterpret_cast<void *>(g_prev_segv.sa_sigaction) != reinterpret_cast<void *>(SIG_IGN)) {
    errno = saved_errno;
    g_prev_segv.sa_sigaction(sig, si, ctx);
    return;
  }
  if (!(g_prev_segv.sa_flags & SA_SIGINFO) && g_prev_segv.sa_handler != SIG_DFL &&
      g_prev_segv.sa_handler != SIG_IGN) {
    errno = saved_errno;
    g_prev_segv.sa_handler(sig);
    return;
  }
  char buf[200];
  char a[17], r[17], c[17], k[17];
  format_hex(a, reinterpret_cast<uint64_t>(si->si_addr));
  format_hex(r, static_cast<uint64_t>(rip));
  format_hex(c, static_cast<uint64_t>(si->si_code));
  format_hex(k, si->si_code == kSegvPkuErr ? static_cast<uint64_t>(si->si_pkey) : ~0ull);
  snprintf(buf, sizeof buf,
           "\nmpk_hw_tests: UNEXPECTED SIGSEGV outside a probe: addr 0x%s rip 0x%s si_code 0x%s "
           "si_pkey 0x%s\n",
           a, r, c, k);
  raw_message(buf);
  // Default action on return: the instruction faults again and the process dies loudly.
  signal(SIGSEGV, SIG_DFL);
  errno = saved_errno;
}

uint32_t cpuid_ecx7() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return c;
}

PkuSupport probe_pku_support() {
  PkuSupport s;
  uint32_t ecx = cpuid_ecx7();
  s.cpu_pku = (ecx >> 3) & 1;
  s.ospke = (ecx >> 4) & 1;
  long k = syscall(SYS_pkey_alloc, 0, 0);
  if (k >= 0) {
    s.pkey_alloc_ok = true;
    syscall(SYS_pkey_free, k);
  } else {
    s.pkey_alloc_errno = errno;
  }
  return s;
}


int g_scratch_fd = -1;
std::once_flag g_scratch_once;
int scratch_fd() {
  std::call_once(g_scratch_once, [] {
    g_scratch_fd = static_cast<int>(syscall(SYS_memfd_create, "mpkt-scratch", 1u /*CLOEXEC*/));
    if (g_scratch_fd < 0 || ftruncate(g_scratch_fd, 1 << 20) != 0) {
      perror("mpk_hw_tests: scratch memfd");
      abort();
    }
  });
  return g_scratch_fd;
}
off_t scratch_offset() { return static_cast<off_t>((syscall(SYS_gettid) & 0xffff) * 16); }

int prot_rank(int prot) {
  if (!(prot & PROT_READ)) return 0;
  return (prot & PROT_WRITE) ? 2 : 1;
}

struct SmapsEntry {
  uintptr_t start, end;
  int key;
};

std::vector<SmapsEntry> read_smaps() {
  std::vector<SmapsEntry> out;
  int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  std::string text;
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf.data(), static_cast<size_t>(n));
  }
  close(fd);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const char *line = text.c_str() + pos;
    char c = line[0];
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
      char *endp = nullptr;
      uintptr_t s = strtoull(line, &endp, 16);
      if (endp && *endp == '-') {
        uintptr_t e = strtoull(endp + 1, nullptr, 16);
        out.push_back({s, e, -1});
      }
    } else if (!out.empty() && strncmp(line, "ProtectionKey:", 14) == 0) {
      out.back().key = atoi(line + 14);
    }
    pos = eol + 1;
  }
  return out;
}

}  // namespace

const PkuSupport &pku_support() {
  static const PkuSupport s = probe_pku_support();
  return s;
}
// Computed before main: before any mpk_init can take keys.
[[maybe_unused]] static const bool g_pku_early = (pku_support(), true);

void install_probe_handler() {
  std::call_once(g_handler_once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &g_prev_segv) != 0) {
      perror("mpk_hw_tests: sigaction(SIGSEGV)");
      abort();
    }
    scratch_fd();
  });
}

// Fills *f (if given) with the fault the last probe took, if the thread's fault count moved.
static void record_probe_fault(uint64_t before, Fault *f) {
  if (!f) return;
  *f = Fault{};
  if (t_faults.count == before) return;
  f->faulted = true;
  f->fault_code = t_faults.fault_code;
  f->fault_pkey = t_faults.fault_pkey;
  f->fault_addr = t_faults.fault_addr;
}

int probe_read(const void *p, Fault *f) {
  uint64_t before = t_faults.count;
  int v = mpkt_probe_read(p);
  asm volatile("" ::: "memory");
  record_probe_fault(before, f);
  return v;
}

bool probe_write(void *p, uint8_t v, Fault *f) {
  uint64_t before = t_faults.count;
  int ok = mpkt_probe_write(p, v);
  asm volatile("" ::: "memory");
  record_probe_fault(before, f);
  return ok != 0;
}

long probe_exec(const void *fn, Fault *f) {
  uint64_t before = t_faults.count;
  t_faults.exec_target = fn;
  asm volatile("" ::: "memory");
  auto call = reinterpret_cast<int (*)()>(const_cast<void *>(fn));
  int v = call();
  asm volatile("" ::: "memory");
  t_faults.exec_target = nullptr;
  bool faulted = t_faults.count != before;
  if (f) {
    *f = Fault{};
    if (faulted) {
      f->faulted = true;
      f->fault_code = t_faults.fault_code;
      f->fault_pkey = t_faults.fault_pkey;
      f->fault_addr = t_faults.fault_addr;
    }
  }
  return faulted ? static_cast<long>(INT32_MIN) : static_cast<long>(v);
}

uint64_t probe_faults_this_thread() { return t_faults.count; }

int sys_read_access(const void *p) {
  ssize_t n = pwrite(scratch_fd(), p, 1, scratch_offset());
  if (n == 1) return 0;
  return n < 0 ? errno : EIO;
}

int sys_write_access(void *p) {
  ssize_t n = pread(scratch_fd(), p, 1, scratch_offset());
  if (n == 1) return 0;
  return n < 0 ? errno : EIO;
}

uint32_t rdpkru() {
  uint32_t eax, edx;
  asm volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
  return eax;
}

int pkru_prot(uint32_t pkru, int key) {
  uint32_t b = (pkru >> (2 * key)) & 3u;
  if (b & 1u) return PROT_NONE;
  if (b & 2u) return PROT_READ;
  return PROT_READ | PROT_WRITE;
}

std::string prot_name(int prot) {
  switch (prot) {
    case PROT_NONE: return "NONE";
    case PROT_READ: return "READ";
    case PROT_READ | PROT_WRITE: return "READ|WRITE";
    case PROT_READ | PROT_EXEC: return "READ|EXEC";
    default: return "prot(" + std::to_string(prot) + ")";
  }
}

int pkey_of(const void *addr) { return pkeys_of({addr})[0]; }

std::vector<int> pkeys_of(const std::vector<const void *> &addrs) {
  std::vector<SmapsEntry> maps = read_smaps();
  std::sort(maps.begin(), maps.end(),
            [](const SmapsEntry &a, const SmapsEntry &b) { return a.start < b.start; });
  std::vector<int> keys;
  keys.reserve(addrs.size());
  for (const void *a : addrs) {
    uintptr_t x = reinterpret_cast<uintptr_t>(a);
    auto it = std::upper_bound(maps.begin(), maps.end(), x,
                               [](uintptr_t v, const SmapsEntry &e) { return v < e.start; });
    int key = -1;
    if (it != maps.begin()) {
      --it;
      if (x >= it->start && x < it->end) key = it->key;
    }
    keys.push_back(key);
  }
  return keys;
}

bool is_mapped(const void *addr) {
  unsigned char vec;
  void *page = reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(addr) & ~(kPage - 1));
  return mincore(page, kPage, &vec) == 0 || errno != ENOMEM;
}

namespace {
void check_fault(std::ostringstream &err, const char *what, const Fault &f, const void *p,
                 int key) {
  if (!f.faulted) {
    err << "  " << what << ": failed without a recorded fault\n";
    return;
  }
  if (f.fault_addr != p) err << "  " << what << ": si_addr " << f.fault_addr << " != " << p << "\n";
  if (f.fault_code == kSegvPkuErr) {
    if (key >= 0 && f.fault_pkey != key)
      err << "  " << what << ": SEGV_PKUERR with si_pkey " << f.fault_pkey << " but the page has key "
          << key << "\n";
  } else if (f.fault_code != SEGV_ACCERR) {
    err << "  " << what << ": unexpected si_code " << f.fault_code << "\n";
  }
}
}  // namespace

// Appends to err what the kernel allowed, in system calls, that differs from want_r/want_w.
static void check_syscall_access(void *p, bool want_r, bool want_w, std::ostringstream &err) {
  int sr = sys_read_access(p);
  int sw = sys_write_access(p);
  if (want_r ? sr != 0 : sr != EFAULT)
    err << "  read access in a syscall (pwrite from the page): " << (sr ? strerror(sr) : "ok")
        << ", expected " << (want_r ? "ok" : "EFAULT") << "\n";
  if (want_w ? sw != 0 : sw != EFAULT)
    err << "  write access in a syscall (pread into the page): " << (sw ? strerror(sw) : "ok")
        << ", expected " << (want_w ? "ok" : "EFAULT") << "\n";
}

::testing::AssertionResult HasExactly(void *p, int prot, PkruCheck pkru, int key) {
  std::ostringstream err;
  if (key == kLookUpKey) key = pkey_of(p);
  const bool want_r = prot & PROT_READ, want_w = prot & PROT_WRITE;
  uint64_t faults_before = probe_faults_this_thread();
  int expected_faults = 0;

  Fault fr, fw;
  int v = probe_read(p, &fr);
  bool r_ok = v >= 0;
  if (!r_ok) {
    expected_faults++;
    check_fault(err, "user read", fr, p, key);
  }
  bool w_ok = probe_write(p, r_ok ? static_cast<uint8_t>(v) : 0xa5, &fw);
  if (!w_ok) {
    expected_faults++;
    check_fault(err, "user write", fw, p, key);
  }
  if (r_ok != want_r)
    err << "  user read " << (r_ok ? "succeeded" : "faulted") << ", expected "
        << (want_r ? "success" : "a fault") << "\n";
  if (w_ok != want_w)
    err << "  user write " << (w_ok ? "succeeded" : "faulted") << ", expected "
        << (want_w ? "success" : "a fault") << "\n";
  uint64_t faults = probe_faults_this_thread() - faults_before;
  if (faults != static_cast<uint64_t>(expected_faults))
    err << "  " << faults << " faults recorded for " << expected_faults << " failed probes\n";

  check_syscall_access(p, want_r, want_w, err);

  if (key > 0 && pkru != PkruCheck::kSkip) {
    uint32_t reg = rdpkru();
    int got = pkru_prot(reg, key);
    bool bad = pkru == PkruCheck::kExact ? got != prot : prot_rank(got) > prot_rank(prot);
    if (bad) {
      char hex[16];
      snprintf(hex, sizeof hex, "%08x", reg);
      err << "  PKRU 0x" << hex << " gives " << prot_name(got) << " on key " << key
          << (pkru == PkruCheck::kExact ? ", expected exactly " : ", expected at most ")
          << prot_name(prot) << "\n";
    }
  }
  if (key == -1) err << "  address not found in /proc/self/smaps (or no ProtectionKey line)\n";

  std::string e = err.str();
  if (e.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "thread " << syscall(SYS_gettid) << ", address " << p
                                       << " (key " << key << "), expected " << prot_name(prot)
                                       << ":\n" << e;
}

::testing::AssertionResult SyscallsHaveExactly(void *p, int prot) {
  std::ostringstream err;
  const bool want_r = prot & PROT_READ, want_w = prot & PROT_WRITE;
  check_syscall_access(p, want_r, want_w, err);
  std::string e = err.str();
  if (e.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "thread " << syscall(SYS_gettid) << ", address " << p
                                       << ", expected " << prot_name(prot) << ":\n" << e;
}

// ---- Worker ------------------------------------------------------------------------------------

Worker::Worker(Wait wait, bool block_all_signals)
    : wait_(wait), block_all_signals_(block_all_signals) {
  thread_ = std::thread([this] { Loop(); });
  if (!WaitFor([this] { return tid_.load() != 0; }, std::chrono::seconds(120))) {
    fprintf(stderr, "mpk_hw_tests: worker thread did not start\n");
    abort();
  }
}

Worker::~Worker() {
  stop_.store(true, std::memory_order_release);
  seq_.fetch_add(1, std::memory_order_release);
  seq_.notify_all();
  thread_.join();
}

static inline void cpu_relax() { asm volatile("pause" ::: "memory"); }

void Worker::Loop() {
  if (block_all_signals_) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
  }
  tid_.store(static_cast<pid_t>(syscall(SYS_gettid)));
  uint32_t seen = 0;
  for (;;) {
    uint32_t s;
    if (wait_ == Wait::kSpin) {
      unsigned spins = 0;
      while ((s = seq_.load(std::memory_order_acquire)) == seen) {
        cpu_relax();
        if (++spins % 4096 == 0) sched_yield();
      }
    } else {
      while ((s = seq_.load(std::memory_order_acquire)) == seen) seq_.wait(seen);
    }
    seen = s;
    if (stop_.load(std::memory_order_acquire)) return;
    (*job_)();
    done_.store(s, std::memory_order_release);
  }
}

void Worker::Run(const std::function<void()> &fn) {
  job_ = &fn;
  uint32_t s = seq_.fetch_add(1, std::memory_order_release) + 1;
  seq_.notify_all();
  if (!WaitFor([&] { return done_.load(std::memory_order_acquire) == s; },
               std::chrono::seconds(120))) {
    fprintf(stderr, "mpk_hw_tests: a worker job did not finish within 120 s (hang)\n");
    abort();
  }
}

// ---- Watchdog ----------------------------------------------------------------------------------

namespace {
std::mutex g_wd_mu;
std::condition_variable g_wd_cv;
}  // namespace

Watchdog::Watchdog(int seconds, std::string what) {
  thread_ = std::thread([this, seconds, what] {
    std::unique_lock<std::mutex> lock(g_wd_mu);
    if (!g_wd_cv.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_.load(); })) {
      fprintf(stderr, "mpk_hw_tests: WATCHDOG: %s did not finish within %d s (hang); aborting\n",
              what.c_str(), seconds);
      abort();
    }
  });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(g_wd_mu);
    done_.store(true);
  }
  g_wd_cv.notify_all();
  thread_.join();
}

bool WaitFor(const std::function<bool()> &pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (unsigned i = 0;; ++i) {
    if (pred()) return true;
    if (i < 256) {
      cpu_relax();
      continue;
    }
    sched_yield();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return pred();
  }
}


std::string CaptureStderr(const std::function<void()> &fn) {
  fflush(stderr);
  int tmp = static_cast<int>(syscall(SYS_memfd_create, "mpkt-stderr", 1u));
  int saved = dup(2);
  if (tmp < 0 || saved < 0) {
    fn();
    return "<capture failed>";
  }
  dup2(tmp, 2);
  fn();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string out;
  char buf[4096];
  ssize_t n;
  off_t off = 0;
  while ((n = pread(tmp, buf, sizeof buf, off)) > 0) {
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  close(tmp);
  return out;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "status " + std::to_string(status);
}

int WaitChild(pid_t pid, int timeout_seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(2000);
  }
}

}  // namespace mpkt

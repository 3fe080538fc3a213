// pkey_test_util.h - helpers for the hardware test suite of libmpk, in the style of the kernel's
// pkey selftest (tools/testing/selftests/mm/protection_keys.c).
//
// Everything here sees libmpk only through <mpk.h>. Rights are checked three ways:
//   * user-mode probes: one-instruction loads/stores written in assembly. A fault at a probe
//     instruction is recorded (si_code, si_pkey, si_addr, per-thread counters) and the handler
//     skips the instruction and returns normally, so sigreturn restores the thread's own PKRU
//     (no siglongjmp: a handler runs with the default PKRU and a longjmp would keep it);
//   * system calls: the kernel honours the caller's PKRU when it copies to or from user memory,
//     so pwrite() from the page tests read access and pread() into it tests write access;
//   * the PKRU register itself (RDPKRU), read for the group's hardware key taken from
//     /proc/self/smaps (`ProtectionKey:`), when the group is resident (key != 0).
#pragma once

#include <mpk.h>

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace mpkt {

constexpr int RW = PROT_READ | PROT_WRITE;

inline constexpr const char *kSkipReason =
    "CPU lacks PKU (CPUID.7:ECX.PKU=0) or kernel lacks pkeys: the emulated run (mpk_hw_tests_qemu) "
    "covers it";

// CPUID.(7,0):ECX bit 3 (PKU) and bit 4 (OSPKE), and a real pkey_alloc that is freed at once.
struct PkuSupport {
  bool cpu_pku = false;
  bool ospke = false;
  bool pkey_alloc_ok = false;
  int pkey_alloc_errno = 0;
  bool usable() const { return cpu_pku && ospke && pkey_alloc_ok; }
};
const PkuSupport &pku_support();
inline bool pku_usable() { return pku_support().usable(); }

#define MPK_SKIP_WITHOUT_PKU()                                          \
  do {                                                                  \
    if (!::mpkt::pku_usable()) GTEST_SKIP() << ::mpkt::kSkipReason;     \
  } while (0)

// Installs the probe's SIGSEGV handler (once per process; must precede mpk_init so that a
// handler the library installs later sees faults first and chains to this one).
void install_probe_handler();

// Skips without PKU, installs the probe handler, then mpk_init(evict_rate); fails the test if
// mpk_init fails. Use as: MPK_HW_SETUP(100);
#define MPK_HW_SETUP(rate)                                                                 \
  do {                                                                                     \
    MPK_SKIP_WITHOUT_PKU();                                                                \
    ::mpkt::install_probe_handler();                                                       \
    errno = 0;                                                                             \
    ASSERT_EQ(mpk_init(rate), 0) << "mpk_init(" << (rate) << "): " << strerror(errno);     \
  } while (0)

// The fixture most tests use: PKU or skip, probe handler, mpk_init(100).
class MpkHwTest : public ::testing::Test {
 protected:
  void SetUp() override { MPK_HW_SETUP(100); }
};

// ---- probes --------------------------------------------------------------------------------

constexpr int kSegvPkuErr = 4;  // SEGV_PKUERR

struct Fault {
  bool faulted = false;
  int fault_code = 0;
  int fault_pkey = -1;  // si_pkey; only meaningful when fault_code == SEGV_PKUERR
  void *fault_addr = nullptr;
};

// User-mode load of one byte. Returns the byte (0..255) or -1 on a fault; *f gets the details.
int probe_read(const void *p, Fault *f = nullptr);
// User-mode store of one byte. Returns true on success, false on a fault.
bool probe_write(void *p, uint8_t v, Fault *f = nullptr);
// Calls code at fn (a function returning int in eax, no arguments). Returns its value, or
// INT32_MIN when fetching its first instruction faulted.
long probe_exec(const void *fn, Fault *f = nullptr);

// Faults the probes of this thread have taken so far.
uint64_t probe_faults_this_thread();

// Kernel-mode accesses: 0 on success, else errno (EFAULT when the thread lacks the right).
// sys_read_access copies one byte from p into a scratch file (pwrite); sys_write_access copies
// that byte back into p (pread), so a read then a write leaves the byte unchanged.
int sys_read_access(const void *p);
int sys_write_access(void *p);

// ---- PKRU, smaps ---------------------------------------------------------------------------

uint32_t rdpkru();
// The right PKRU gives on key: PROT_NONE (AD), PROT_READ (WD only) or PROT_READ|PROT_WRITE.
int pkru_prot(uint32_t pkru, int key);
std::string prot_name(int prot);

// The ProtectionKey of the mapping that holds addr: -1 when addr is not mapped or smaps has no
// ProtectionKey line.
int pkey_of(const void *addr);
// The same for many addresses from a single read of smaps.
std::vector<int> pkeys_of(const std::vector<const void *> &addrs);
// True when addr lies in a mapping (mincore).
bool is_mapped(const void *addr);

// ---- checking rights -------------------------------------------------------------------

enum class PkruCheck {
  kExact,   // PKRU must give exactly prot (the thread that set the right, or in its domain)
  kAtMost,  // PKRU may give less (a lazily granted thread) but never more
  kSkip,
};
constexpr int kLookUpKey = -2;

// Checks that the calling thread has exactly prot (PROT_NONE, PROT_READ, PROT_READ|PROT_WRITE)
// on the byte at p: user-mode read and write probes, read and write system calls, PKRU for the
// page's key (looked up in smaps unless given; skipped when the key is 0), and the attribution
// of every fault (si_addr == p, si_code SEGV_PKUERR with si_pkey == key or SEGV_ACCERR, one
// fault per failed probe). The byte is left unchanged.
::testing::AssertionResult HasExactly(void *p, int prot, PkruCheck pkru = PkruCheck::kAtMost,
                                      int key = kLookUpKey);
// Only the system-call half: for a thread that blocks SIGSEGV and must not fault.
::testing::AssertionResult SyscallsHaveExactly(void *p, int prot);

// ---- threads -------------------------------------------------------------------------------

// Runs closures on its own thread, one at a time. The thread waits for work spinning in user
// mode (kSpin: it is running when another thread revokes) or asleep in a futex (kSleep).
class Worker {
 public:
  enum class Wait { kSpin, kSleep };
  explicit Worker(Wait wait = Wait::kSpin, bool block_all_signals = false);
  ~Worker();
  Worker(const Worker &) = delete;
  Worker &operator=(const Worker &) = delete;

  // Runs fn on the worker and waits for it (aborts the process if it takes over 120 s).
  void Run(const std::function<void()> &fn);
  pid_t tid() const { return tid_.load(); }

 private:
  void Loop();
  Wait wait_;
  bool block_all_signals_;
  std::atomic<uint32_t> seq_{0};   // bumped by Run to post a job
  std::atomic<uint32_t> done_{0};  // bumped by the worker when a job is done
  std::atomic<bool> stop_{false};
  std::atomic<pid_t> tid_{0};
  const std::function<void()> *job_ = nullptr;
  std::thread thread_;
};

// Aborts the process with a message if not destroyed within the given time: a hang in the
// library must fail the run, not stall it.
class Watchdog {
 public:
  Watchdog(int seconds, std::string what);
  ~Watchdog();

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Spins (with pause, then sched_yield) until pred() or the timeout; returns pred().
bool WaitFor(const std::function<bool()> &pred, std::chrono::milliseconds timeout =
                                                    std::chrono::seconds(60));

// ---- groups --------------------------------------------------------------------------------

// A vkey no other test in this process uses.
int FreshVkey();

// Expects mpk_munmap, mpk_begin, mpk_end and mpk_mprotect on vkey v each to fail with EINVAL
// (a negative vkey, or one that was never created or is gone).
void ExpectUnknownVkey(int v);
constexpr size_t kPage = 4096;

// mpk_mmap(vkey, NULL, pages*4096, prot, MAP_PRIVATE|MAP_ANONYMOUS) with a check; mpk_munmap at
// scope exit unless Release()d or already unmapped.
class Group {
 public:
  explicit Group(size_t pages = 1, int prot = PROT_READ | PROT_WRITE, int vkey = FreshVkey());
  ~Group();
  Group(const Group &) = delete;
  Group &operator=(const Group &) = delete;
  int vkey() const { return vkey_; }
  uint8_t *base() const { return base_; }
  uint8_t *page(size_t i) const { return base_ + i * kPage; }
  size_t pages() const { return pages_; }
  bool ok() const { return base_ != nullptr; }
  void Forget() { base_ = nullptr; }  // the test munmapped it itself

 private:
  int vkey_;
  uint8_t *base_ = nullptr;
  size_t pages_;
};

// Runs fn in stderr-captured mode and returns what it printed on fd 2.
std::string CaptureStderr(const std::function<void()> &fn);

// The state of a child process after waitpid, as text ("exit 0", "signal 11 (core)", ...).
std::string DescribeWaitStatus(int status);
// waitpid with a deadline: kills the child with SIGKILL and returns -1 on timeout.
int WaitChild(pid_t pid, int timeout_seconds);

}  // namespace mpkt

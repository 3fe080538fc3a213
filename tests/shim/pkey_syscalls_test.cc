// The program's own pkey calls under the shim (preload/interpose_pkey.cc): the shim's keys look
// unallocated to the program, whether it calls glibc's pkey_free/pkey_mprotect or syscall(), so
// the program can neither free them (a protection-key-use-after-free: a later pkey_alloc would
// hand the key back with the program's rights over the shim's pages) nor tag its pages with them;
// the program's pkey_alloc never gets one, and the shim never takes a key the program holds.
// syscall() passes every other number through unchanged (also where the shim has no keys).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pkey_test_util.h"
#include "shim_test_util.h"

using mpkt::RW;
using shimt::Mapping;

namespace {

// Every protection key some mapping of this process carries now (smaps), key 0 aside.
std::set<int> keys_on_pages() {
  std::set<int> keys;
  std::ifstream in("/proc/self/smaps");
  std::string line;
  while (std::getline(in, line)) {
    int k;
    if (sscanf(line.c_str(), "ProtectionKey: %d", &k) == 1 && k > 0) keys.insert(k);
  }
  return keys;
}

// What a call returned and the errno it left.
struct Outcome {
  long ret;
  int err;
  bool operator==(const Outcome &o) const { return ret == o.ret && (ret != -1 || err == o.err); }
};
std::ostream &operator<<(std::ostream &os, const Outcome &o) {
  return os << o.ret << (o.ret == -1 ? std::string(" errno ") + strerror(o.err) : std::string());
}
template <typename F>
Outcome outcome(F f) {
  errno = 0;
  long r = f();
  return {r, errno};
}

// Allocates every key the kernel still gives this process (through glibc and syscall() in turn),
// with rights `rights`; frees them at scope exit.
class AllKeys {
 public:
  explicit AllKeys(unsigned rights) {
    for (int i = 0; i < 16; ++i) {
      errno = 0;
      int k = i % 2 ? static_cast<int>(syscall(SYS_pkey_alloc, 0, rights)) : pkey_alloc(0, rights);
      if (k < 0) {
        EXPECT_EQ(errno, ENOSPC);
        break;
      }
      keys_.push_back(k);
    }
  }
  ~AllKeys() {
    for (int k : keys_) EXPECT_EQ(pkey_free(k), 0) << "key " << k;
  }
  const std::vector<int> &keys() const { return keys_; }

 private:
  std::vector<int> keys_;
};

class PkeySyscalls : public ::testing::Test {
 protected:
  void SetUp() override { mpkt::install_probe_handler(); }
};

// A page group of the shim, resident in a key, that the program has set read-only: its key
// write-disables it. Returns the key.
int ReadOnlyGroup(const Mapping &m) {
  shimt::Toggle(m, 3);
  EXPECT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  int key = mpkt::pkey_of(m.base());
  EXPECT_GT(key, 0) << "the toggled range should carry one of the shim's keys";
  return key;
}

TEST_F(PkeySyscalls, FreeOfAShimKeyFailsAndTheKeyKeepsProtecting) {
  SHIM_SKIP_UNLESS_EMULATING();
  Mapping m(2);
  int key = ReadOnlyGroup(m);
  ASSERT_GT(key, 0);
  std::set<int> shim_keys = keys_on_pages();  // the group's key and the shim's metadata key
  ASSERT_TRUE(shim_keys.count(key));
  ASSERT_GE(shim_keys.size(), 2u) << "the metadata arena should carry the shim's metadata key";
  for (int k : shim_keys) {
    SCOPED_TRACE("shim key " + std::to_string(k));
    Outcome glibc = outcome([&] { return pkey_free(k); });
    EXPECT_EQ(glibc, (Outcome{-1, EINVAL}));
    Outcome raw = outcome([&] { return syscall(SYS_pkey_free, k); });
    EXPECT_EQ(raw, (Outcome{-1, EINVAL}));
    // The kernel takes an int: the upper half of the register does not hide the key.
    Outcome wide = outcome([&] { return syscall(SYS_pkey_free, 0x100000000L | k); });
    EXPECT_EQ(wide, (Outcome{-1, EINVAL}));
  }
  // Had a free gone through, the key would now come back to the program, open: every key the
  // program can get, with full rights, and the group must still be write-protected.
  {
    AllKeys all(0);
    EXPECT_FALSE(all.keys().empty());
    for (int k : all.keys()) EXPECT_FALSE(shim_keys.count(k)) << "pkey_alloc returned the shim's key " << k;
    EXPECT_EQ(mpkt::pkey_of(m.base()), key);
    mpkt::Fault f;
    EXPECT_FALSE(mpkt::probe_write(m.base(), 1, &f)) << "the group lost its write protection";
    EXPECT_GE(mpkt::probe_read(m.base()), 0);
  }
  ASSERT_EQ(mprotect(m.base(), m.bytes(), RW), 0);
  EXPECT_TRUE(mpkt::probe_write(m.base(), 1));
}

TEST_F(PkeySyscalls, PkeyMprotectWithAShimKeyFailsAsForAnUnallocatedKey) {
  SHIM_SKIP_UNLESS_EMULATING();
  Mapping m(1);
  int key = ReadOnlyGroup(m);
  ASSERT_GT(key, 0);
  // A key nobody holds, to compare with: allocated and freed again.
  int unallocated = pkey_alloc(0, 0);
  ASSERT_GT(unallocated, 0) << strerror(errno);
  ASSERT_EQ(pkey_free(unallocated), 0);
  Mapping own(2);
  auto *p = own.base();
  struct Args {
    void *addr;
    size_t len;
    long prot;
  } cases[] = {
      {p, 4096, PROT_READ},             // a plain call: EINVAL for the key
      {p, 2 * 4096, RW},                // two pages
      {p, 0, PROT_READ},                // empty: the kernel answers 0 before it looks at the key
      {p + 1, 4096, PROT_READ},         // unaligned: EINVAL before the key
      {p, 4096, 0x100},                 // bad prot: EINVAL before the key
      {p, static_cast<size_t>(-8192), PROT_READ},  // wraps: ENOMEM before the key
      {p, size_t{1} << 46, PROT_READ},              // huge but no wrap: EINVAL for the key
  };
  for (const Args &a : cases) {
    SCOPED_TRACE("pkey_mprotect(base+" + std::to_string((uint8_t *)a.addr - p) + ", " + std::to_string(a.len) +
                 ", " + std::to_string(a.prot) + ")");
    Outcome want = outcome([&] { return syscall(SYS_pkey_mprotect, a.addr, a.len, a.prot, unallocated); });
    EXPECT_EQ(outcome([&] { return pkey_mprotect(a.addr, a.len, static_cast<int>(a.prot), key); }), want);
    EXPECT_EQ(outcome([&] { return syscall(SYS_pkey_mprotect, a.addr, a.len, a.prot, key); }), want);
  }
  EXPECT_EQ(outcome([&] { return pkey_mprotect(p, 4096, PROT_READ, key); }), (Outcome{-1, EINVAL}));
  EXPECT_EQ(outcome([&] { return pkey_free(unallocated); }), outcome([&] { return pkey_free(key); }));
  EXPECT_EQ(mpkt::pkey_of(p), 0) << "the program's pages must not take the shim's key";
  // (The huge range with the unallocated key also covers the group: the emulation gave it back to
  // the page table first, legacy_pkey_mprotect. It must still be read-only.)
  mpkt::Fault f;
  EXPECT_FALSE(mpkt::probe_write(m.base(), 1, &f));
  EXPECT_TRUE(mpkt::probe_write(p, 1));
}

TEST_F(PkeySyscalls, ProgramAndShimNeverShareAKey) {
  SHIM_SKIP_UNLESS_EMULATING();
  Mapping m(1);
  int key = ReadOnlyGroup(m);
  ASSERT_GT(key, 0);
  std::set<int> shim_keys = keys_on_pages();
  // As the kernel's selftest does (test_pkey_syscalls_on_non_allocated_pkey): free every key the
  // program never allocated. None may go, or the next pkey_alloc hands a shim key out.
  for (int k = 1; k < 16; ++k) {
    EXPECT_EQ(outcome([&] { return syscall(SYS_pkey_free, k); }), (Outcome{-1, EINVAL})) << "key " << k;
    EXPECT_EQ(outcome([&] { return pkey_free(k); }), (Outcome{-1, EINVAL})) << "key " << k;
  }
  AllKeys all(PKEY_DISABLE_WRITE);
  ASSERT_FALSE(all.keys().empty());
  std::set<int> mine(all.keys().begin(), all.keys().end());
  for (int k : mine) EXPECT_FALSE(shim_keys.count(k)) << "pkey_alloc returned the shim's key " << k;
  // Every key is now someone's. New hot ranges must not take one of the program's keys.
  std::vector<std::unique_ptr<Mapping>> hot;
  for (int i = 0; i < 4; ++i) {
    hot.push_back(std::make_unique<Mapping>(1));
    shimt::Toggle(*hot.back(), 3);
    int k = mpkt::pkey_of(hot.back()->base());
    EXPECT_FALSE(mine.count(k)) << "the shim tagged a hot range with the program's key " << k;
    EXPECT_TRUE(mpkt::probe_write(hot.back()->base(), 1));
  }
  // The program's keys are its own: they tag its pages and keep the rights it gave them.
  Mapping own(1);
  for (int k : mine) {
    EXPECT_EQ(pkey_mprotect(own.base(), own.bytes(), RW, k), 0) << "key " << k;
    EXPECT_EQ(mpkt::pkey_of(own.base()), k);
    EXPECT_EQ(mpkt::pkru_prot(mpkt::rdpkru(), k), PROT_READ) << "key " << k;
  }
  EXPECT_EQ(syscall(SYS_pkey_mprotect, own.base(), own.bytes(), RW, 0), 0);
  // The read-only group stays read-only (in its key, or in the page table if a hot range took
  // the key over).
  mpkt::Fault f;
  EXPECT_FALSE(mpkt::probe_write(m.base(), 1, &f));
}

TEST_F(PkeySyscalls, PkeySetOnAShimKeyLeavesItsRights) {
  SHIM_SKIP_UNLESS_EMULATING();
  Mapping m(1);
  int key = ReadOnlyGroup(m);
  ASSERT_GT(key, 0);
  uint32_t before = mpkt::rdpkru();
  EXPECT_EQ(pkey_get(key), PKEY_DISABLE_ACCESS) << "an unallocated key of a fresh process";
  EXPECT_EQ(pkey_set(key, 0), 0);
  EXPECT_EQ(pkey_get(key), 0) << "the program reads back what it set";
  EXPECT_EQ(mpkt::rdpkru(), before) << "the shim's bits must not change";
  mpkt::Fault f;
  EXPECT_FALSE(mpkt::probe_write(m.base(), 1, &f)) << "pkey_set opened the shim's key";
  EXPECT_EQ(outcome([&] { return pkey_set(16, 0); }), (Outcome{-1, EINVAL}));
  EXPECT_EQ(outcome([&] { return pkey_get(-1); }), (Outcome{-1, EINVAL}));
  // The program's own keys are glibc's: the register itself.
  int mine = pkey_alloc(0, 0);
  ASSERT_GT(mine, 0);
  EXPECT_EQ(pkey_set(mine, PKEY_DISABLE_WRITE), 0);
  EXPECT_EQ(mpkt::pkru_prot(mpkt::rdpkru(), mine), PROT_READ);
  EXPECT_EQ(pkey_get(mine), PKEY_DISABLE_WRITE);
  EXPECT_EQ(pkey_free(mine), 0);
}

// On simulated keys (MPK_SIMULATE=1) on a CPU with PKU the engine's keys are a pool of its own,
// not the kernel's: the program's real keys and the simulated ones must still never share a
// number (a shared one would make the program's pkey_free of its own key fail).
TEST(PkeySyscallsSimulated, ProgramAndSimulatedKeysNeverShareANumber) {
  if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_PKEY_SIM")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  if (!mpkt::pku_usable()) GTEST_SKIP() << mpkt::kSkipReason;
  shimt::ChildResult r =
      shimt::RunSelf("PkeySimChild.*", {{"MPK_SIMULATE", "1"}, {"MPK_SHIM_TEST_PKEY_SIM", "1"}, {"MPK_LOG", "error"}});
  EXPECT_EQ(r.status, "exit 0") << r.output;
  EXPECT_NE(r.output.find("[  PASSED  ] 1 test"), std::string::npos) << r.output;
}

TEST(PkeySimChild, Run) {
  if (!getenv("MPK_SHIM_TEST_PKEY_SIM")) GTEST_SKIP() << "the child of PkeySyscallsSimulated";
  ASSERT_TRUE(shimt::stats() && shimt::stats()->backend.load() == 2) << "not on simulated keys";
  std::vector<std::unique_ptr<Mapping>> hot;
  auto heat = [&](int n) {
    for (int i = 0; i < n; ++i) {
      hot.push_back(std::make_unique<Mapping>(1));
      shimt::Toggle(*hot.back(), 3);
    }
  };
  heat(2);  // the engine takes simulated keys (metadata, two groups)
  int before = shimt::stats()->hw_keys.load();
  ASSERT_GE(before, 2);
  std::vector<int> mine;
  for (int i = 0; i < 16; ++i) {
    int k = i % 2 ? static_cast<int>(syscall(SYS_pkey_alloc, 0, 0)) : pkey_alloc(0, 0);
    if (k < 0) break;
    mine.push_back(k);
  }
  // Every real key but the numbers the engine simulates: those are held back.
  EXPECT_EQ(mine.size(), 15u - 1u - static_cast<size_t>(before)) << "keys " << ::testing::PrintToString(mine);
  heat(4);  // more groups: no simulated key may take a number the program holds
  for (int k : mine) EXPECT_EQ(pkey_free(k), 0) << "the program could not free its own key " << k;
}

// ---- MPK_SECCOMP=1: raw system calls (core/src/pkey_gate.h) ----------------------------------

// The instruction itself, as code that bypasses glibc does it.
long raw_syscall(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
  long ret;
  register long r10 asm("r10") = d;
  asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return ret;
}
// The i386 entry from a 64-bit process (pkey_free is 382 there, pkey_mprotect 380).
long raw_int80(long nr, long b, long c = 0, long d = 0, long si = 0) {
  long ret;
  asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(b), "c"(c), "d"(d), "S"(si) : "r8", "r9", "r10", "r11", "memory");
  return static_cast<int>(ret);
}

TEST(PkeySeccomp, RawSyscallsCannotTouchTheShimsKeys) {
  if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_SECCOMP")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  SHIM_SKIP_UNLESS_EMULATING();
  shimt::ChildResult r = shimt::RunSelf("PkeySeccompChild.*", {{"MPK_SECCOMP", "1"}, {"MPK_SHIM_TEST_SECCOMP", "1"}});
  EXPECT_EQ(r.status, "exit 0") << r.output;
  EXPECT_NE(r.output.find("[  PASSED  ] 1 test"), std::string::npos) << r.output;
}

TEST(PkeySeccompChild, Run) {
  if (!getenv("MPK_SHIM_TEST_SECCOMP") || getenv("MPK_SHIM_TEST_SECCOMP_EXEC"))
    GTEST_SKIP() << "the child of PkeySeccomp";
  ASSERT_TRUE(shimt::emulating());
  mpkt::install_probe_handler();
  Mapping m(1);
  int key = ReadOnlyGroup(m);
  ASSERT_GT(key, 0);
  std::set<int> shim_keys = keys_on_pages();
  int unallocated = pkey_alloc(0, 0);
  ASSERT_GT(unallocated, 0);
  ASSERT_EQ(pkey_free(unallocated), 0);
  Mapping own(2);
  uint8_t *p = own.base();
  for (int k : shim_keys) {
    SCOPED_TRACE("shim key " + std::to_string(k));
    EXPECT_EQ(raw_syscall(SYS_pkey_free, k), -EINVAL);
    EXPECT_EQ(raw_syscall(SYS_pkey_free, 0x700000000L | k), -EINVAL) << "the kernel takes an int";
    EXPECT_EQ(raw_int80(382, k), raw_int80(382, unallocated)) << "i386 pkey_free";
    struct {
      long addr, len, prot;
    } cases[] = {{(long)p, 4096, PROT_READ}, {(long)p, 8192, RW},  {(long)p, 0, PROT_READ},
                 {(long)p + 1, 4096, PROT_READ}, {(long)p, 4096, 0x100}, {(long)p, -8192, PROT_READ},
                 {(long)p, -4095, PROT_READ}, {(long)p, 1L << 46, PROT_READ}, {(long)p, 4096, 0x100000000L | PROT_READ},
                 {(long)p, 4096, PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP}, {(long)p, 4096, PROT_READ | 0x8}};
    for (const auto &c : cases) {
      SCOPED_TRACE("pkey_mprotect(" + std::to_string(c.addr - (long)p) + ", " + std::to_string(c.len) + ", " +
                   std::to_string(c.prot) + ")");
      EXPECT_EQ(raw_syscall(SYS_pkey_mprotect, c.addr, c.len, c.prot, k),
                raw_syscall(SYS_pkey_mprotect, c.addr, c.len, c.prot, unallocated));
    }
    EXPECT_EQ(raw_int80(380, (long)p, 4096, PROT_READ, k), raw_int80(380, (long)p, 4096, PROT_READ, unallocated));
    EXPECT_EQ(mpkt::pkey_of(p), 0);
  }
  // Still the shim's: every key the program gets is another, and the group is still read-only.
  {
    AllKeys all(0);
    for (int k : all.keys()) EXPECT_FALSE(shim_keys.count(k)) << "pkey_alloc returned the shim's key " << k;
    EXPECT_FALSE(mpkt::probe_write(m.base(), 1));
    // The program's own keys: raw calls are the kernel's.
    int mine = all.keys().empty() ? -1 : all.keys().front();
    ASSERT_GT(mine, 0);
    EXPECT_EQ(raw_syscall(SYS_pkey_mprotect, (long)p, 4096, RW, mine), 0);
    EXPECT_EQ(mpkt::pkey_of(p), mine);
    EXPECT_EQ(raw_syscall(SYS_pkey_mprotect, (long)p, 4096, RW, 0), 0);
  }
  // The shim goes on working: more groups (new keys, each guarded), toggles, a free of the
  // program's own key by a raw call.
  Mapping m2(1);
  int key2 = ReadOnlyGroup(m2);
  EXPECT_GT(key2, 0);
  EXPECT_FALSE(mpkt::probe_write(m2.base(), 1));
  ASSERT_EQ(mprotect(m2.base(), m2.bytes(), RW), 0);
  EXPECT_TRUE(mpkt::probe_write(m2.base(), 1));
  int mine = pkey_alloc(0, 0);
  ASSERT_GT(mine, 0);
  EXPECT_EQ(raw_syscall(SYS_pkey_free, mine), 0);
  // What the filter does to a program exec'd later without the shim: the numbers of the keys it
  // guarded stay refused to pkey_mprotect and pkey_free, as README says.
  std::string guarded;
  for (int k : keys_on_pages()) guarded += std::to_string(k) + ",";
  pid_t pid = fork();
  if (pid == 0) {
    unsetenv("LD_PRELOAD");
    setenv("MPK_SHIM_TEST_SECCOMP_EXEC", guarded.c_str(), 1);
    int fd = open("/dev/null", O_WRONLY);
    dup2(fd, 1);
    execl("/proc/self/exe", "mpk_shim_tests", "--gtest_filter=PkeySeccompExec.*", nullptr);
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "exec'd program: status " << status;
}

TEST(PkeySeccompExec, GuardedNumbersStayRefused) {
  const char *guarded = getenv("MPK_SHIM_TEST_SECCOMP_EXEC");
  if (!guarded) GTEST_SKIP() << "exec'd by PkeySeccompChild";
  std::set<int> g;
  for (const char *s = guarded; *s;) {
    g.insert(atoi(s));
    s = strchr(s, ',');
    if (!s) break;
    ++s;
  }
  Mapping own(1);
  std::vector<int> keys;
  for (int k; (k = pkey_alloc(0, 0)) > 0;) keys.push_back(k);
  ASSERT_FALSE(keys.empty());
  for (int k : keys) {
    long r = raw_syscall(SYS_pkey_mprotect, (long)own.base(), 4096, RW, k);
    if (g.count(k))
      EXPECT_EQ(r, -EINVAL) << "key " << k << " (guarded by the parent's filter)";
    else
      EXPECT_EQ(r, 0) << "key " << k;
  }
  for (int k : keys) EXPECT_EQ(raw_syscall(SYS_pkey_free, k), g.count(k) ? -EINVAL : 0) << "key " << k;
}

// Everywhere (without keys the shim is a pass-through): syscall() is glibc's for every number.
TEST_F(PkeySyscalls, SyscallPassesOtherNumbersThrough) {
  EXPECT_EQ(syscall(SYS_getpid), getpid());
  EXPECT_EQ(syscall(SYS_gettid), gettid());
  EXPECT_EQ(outcome([] { return syscall(SYS_close, -1); }), (Outcome{-1, EBADF}));
  EXPECT_EQ(outcome([] { return syscall(-1L); }), (Outcome{-1, ENOSYS}));
  EXPECT_EQ(outcome([] { return syscall(100000L); }), (Outcome{-1, ENOSYS}));
  // All six arguments, the sixth from the stack: a file mapping at an offset.
  char path[] = "/tmp/mpk-pkey-syscalls-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  std::vector<char> data(3 * 4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i / 4096 + 1);
  ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  long r = syscall(SYS_mmap, 0L, 4096L, static_cast<long>(PROT_READ), static_cast<long>(MAP_PRIVATE), static_cast<long>(fd),
                   2 * 4096L);
  ASSERT_NE(r, -1) << strerror(errno);
  EXPECT_EQ(*reinterpret_cast<char *>(r), 3) << "the offset (sixth argument) was not passed";
  EXPECT_EQ(syscall(SYS_munmap, r, 4096L), 0);
  close(fd);
  // errno is left alone on success.
  errno = 1234;
  EXPECT_EQ(syscall(SYS_getppid), getppid());
  EXPECT_EQ(errno, 1234);
  // The pkey numbers where no key is the shim's: the kernel's own answers.
  EXPECT_EQ(outcome([] { return syscall(SYS_pkey_free, 99); }), (Outcome{-1, EINVAL}));
  EXPECT_EQ(outcome([] { return syscall(SYS_pkey_alloc, 1, 0); }), (Outcome{-1, EINVAL})) << "bad flags";
  if (!shimt::emulating()) {
    // No keys in the shim: every key number gets exactly what the kernel says (EINVAL without
    // PKU; with PKU but a pass-through shim, a real free of a key this process never got).
    for (int k = 1; k < 16; ++k) {
      Outcome a = outcome([&] { return syscall(SYS_pkey_free, k); });
      Outcome b = outcome([&] { return pkey_free(k); });
      EXPECT_EQ(a, b) << "key " << k;
    }
  }
}

}  // namespace

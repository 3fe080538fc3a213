// W^X-enforcing environments: a seccomp filter like systemd's MemoryDenyWriteExecute refuses what
// would make memory writable and executable at once. The shim's RWX ceiling for RW<->RX toggles is
// then refused too: the range is left to the kernel and the program runs exactly as without the
// shim; ranges that never execute are still served by keys.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "shim_test_util.h"

namespace {

// Refuses (EPERM) mmap, mprotect and pkey_mprotect whose prot has both PROT_WRITE and PROT_EXEC;
// strict: mprotect and pkey_mprotect with PROT_EXEC at all (systemd's MemoryDenyWriteExecute).
bool install_wx_filter(bool strict) {
  constexpr uint32_t kWX = PROT_WRITE | PROT_EXEC;
  const uint32_t mprotect_mask = strict ? PROT_EXEC : kWX;
  const uint32_t prot_arg = offsetof(struct seccomp_data, args) + 2 * sizeof(uint64_t);
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 0, 4),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, prot_arg),
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, kWX),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kWX, 6, 7),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),  // not reached
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 1, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pkey_mprotect, 0, 4),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, prot_arg),
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, mprotect_mask),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, mprotect_mask, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  // Jumps are relative to the next instruction: not mmap -> 6; mmap with W|X -> 11 (refuse), else
  // 12 (allow); mprotect or pkey_mprotect -> 8, anything else -> 12.
  struct sock_fprog prog = {static_cast<unsigned short>(sizeof f / sizeof f[0]), f};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

bool any_wx_mapping(std::string *line) {
  std::ifstream maps("/proc/self/maps");
  for (std::string l; std::getline(maps, l);) {
    if (l.size() > 30 && l.find(" rwx") != std::string::npos) {
      *line = l;
      return true;
    }
  }
  return false;
}

TEST(WxChild, TogglesRunAsWithoutTheShim) {
  const char *mode = getenv("MPK_SHIM_TEST_WX");
  if (!mode) GTEST_SKIP() << "the child of Wx.*";
  const bool strict = std::strcmp(mode, "strict") == 0;
  mpkt::install_probe_handler();
  ASSERT_TRUE(install_wx_filter(strict)) << strerror(errno);
  // The filter works: W+X is refused to the program itself.
  EXPECT_EQ(mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), MAP_FAILED);
  EXPECT_EQ(errno, EPERM);

  // A JIT's pattern: write code, then run it, again and again.
  shimt::Mapping code(2);
  const int exec_expect = strict ? -1 : 0;
  for (int i = 0; i < 8; ++i) {
    code.base()[i] = static_cast<uint8_t>(0xc3);
    errno = 0;
    int rc = mprotect(code.base(), code.bytes(), PROT_READ | PROT_EXEC);
    EXPECT_EQ(rc, exec_expect) << "round " << i << ": errno " << errno;
    if (rc != 0) {
      EXPECT_EQ(errno, EPERM);
    }
    ASSERT_EQ(mprotect(code.base(), code.bytes(), PROT_READ | PROT_WRITE), 0) << "round " << i;
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(code.base()[i], 0xc3);
  EXPECT_TRUE(shimt::Has(code.base(), PROT_READ | PROT_WRITE));
  std::string wx;
  EXPECT_FALSE(any_wx_mapping(&wx)) << "writable and executable: " << wx;

  // Data toggles never need execute rights: still a key's.
  shimt::Mapping data(2);
  shimt::Toggle(data, 4);
  ASSERT_EQ(mprotect(data.base(), data.bytes(), PROT_READ), 0);
  EXPECT_TRUE(shimt::Has(data.base(), PROT_READ));
  if (shimt::emulating()) EXPECT_GT(mpkt::pkey_of(data.base()), 0) << "the data range should be emulated";
}

class Wx : public ::testing::TestWithParam<const char *> {};

TEST_P(Wx, ProgramUnderAFilterRunsIdentically) {
  if (!shimt::UnderShimAndNotChild("MPK_SHIM_TEST_WX")) GTEST_SKIP() << "runs only under LD_PRELOAD=libmpk_shim.so";
  shimt::ChildResult r = shimt::RunSelf("WxChild.*", {{"MPK_SHIM_TEST_WX", GetParam()}});
  EXPECT_EQ(r.status, "exit 0") << r.output;
  EXPECT_EQ(r.output.find("[  SKIPPED ]"), std::string::npos) << r.output;
}

INSTANTIATE_TEST_SUITE_P(Filters, Wx, ::testing::Values("wx", "strict"));

}  // namespace

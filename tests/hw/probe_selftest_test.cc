// probe_selftest_test.cc - the suite's own instruments, checked against the kernel directly
// (no libmpk): the probes see page-table faults and pkey faults with the right si_code/si_pkey,
// PKRU reads back what pkey_set wrote, smaps reports the key, and HasExactly does fail on a
// wrong expectation. If these fail, no other result of this suite can be trusted.
#include <sys/syscall.h>
#include <unistd.h>

#include "pkey_test_util.h"

using namespace mpkt;


class ProbeSelfTest : public mpkt::MpkHwTest {};

TEST_F(ProbeSelfTest, PageTableFaultsAreSeenAsAccerr) {
  auto *p = static_cast<uint8_t *>(
      mmap(nullptr, mpkt::kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(static_cast<void *>(p), MAP_FAILED);
  mpkt::Fault f;
  EXPECT_EQ(mpkt::probe_read(p + 5, &f), -1);
  EXPECT_TRUE(f.faulted);
  EXPECT_EQ(f.fault_code, SEGV_ACCERR);
  EXPECT_EQ(f.fault_addr, p + 5);
  EXPECT_TRUE(HasExactly(p, PROT_NONE));
  EXPECT_FALSE(HasExactly(p, PROT_READ)) << "HasExactly must fail on a wrong expectation";
  ASSERT_EQ(mprotect(p, mpkt::kPage, PROT_READ), 0);
  EXPECT_TRUE(HasExactly(p, PROT_READ));
  EXPECT_FALSE(HasExactly(p, RW));
  EXPECT_FALSE(HasExactly(p, PROT_NONE));
  ASSERT_EQ(mprotect(p, mpkt::kPage, RW), 0);
  p[9] = 77;
  EXPECT_TRUE(HasExactly(p + 9, RW));
  EXPECT_EQ(p[9], 77) << "HasExactly must leave the byte unchanged";
  EXPECT_EQ(mpkt::pkey_of(p), 0);
  munmap(p, mpkt::kPage);
  EXPECT_FALSE(mpkt::is_mapped(p));
}

TEST_F(ProbeSelfTest, PkeyFaultsCarryTheKeyAndPkruMatches) {
  errno = 0;
  int k = pkey_alloc(0, 0);
  ASSERT_GE(k, 1) << "no key left for another pkey user: " << strerror(errno);
  auto *p = static_cast<uint8_t *>(
      mmap(nullptr, mpkt::kPage, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(static_cast<void *>(p), MAP_FAILED);
  ASSERT_EQ(pkey_mprotect(p, mpkt::kPage, RW, k), 0);
  EXPECT_EQ(mpkt::pkey_of(p), k);
  ASSERT_EQ(pkey_set(k, PKEY_DISABLE_ACCESS), 0);
  EXPECT_EQ(mpkt::pkru_prot(mpkt::rdpkru(), k), PROT_NONE);
  mpkt::Fault f;
  EXPECT_FALSE(mpkt::probe_write(p + 1, 3, &f));
  EXPECT_EQ(f.fault_code, mpkt::kSegvPkuErr);
  EXPECT_EQ(f.fault_pkey, k);
  EXPECT_EQ(f.fault_addr, p + 1);
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact));
  EXPECT_EQ(mpkt::sys_read_access(p), EFAULT) << "the kernel honours PKRU in syscalls";
  ASSERT_EQ(pkey_set(k, PKEY_DISABLE_WRITE), 0);
  EXPECT_EQ(mpkt::pkru_prot(mpkt::rdpkru(), k), PROT_READ);
  EXPECT_TRUE(HasExactly(p, PROT_READ, PkruCheck::kExact));
  EXPECT_FALSE(HasExactly(p, RW, PkruCheck::kSkip));
  ASSERT_EQ(pkey_set(k, 0), 0);
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  // A thread's PKRU is its own: a new thread copies it at creation, then they diverge.
  ASSERT_EQ(pkey_set(k, PKEY_DISABLE_ACCESS), 0);
  std::thread([&] {
    EXPECT_EQ(pkey_set(k, 0), 0);
    EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  }).join();
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact));
  // A wrong PKRU expectation is caught even when the probes agree.
  ASSERT_EQ(pkey_set(k, 0), 0);
  ASSERT_EQ(mprotect(p, mpkt::kPage, PROT_READ), 0);  // page table: read only; PKRU: RW
  EXPECT_FALSE(HasExactly(p, PROT_READ, PkruCheck::kAtMost))
      << "PKRU gives RW on a group expected READ";
  EXPECT_TRUE(HasExactly(p, PROT_READ, PkruCheck::kSkip));
  munmap(p, mpkt::kPage);  // untag before freeing the key
  pkey_free(k);
}

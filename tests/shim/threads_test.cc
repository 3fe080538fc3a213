// Other threads under the shim: grants reach them lazily (a fault, or an EFAULT the I/O wrappers
// repair), revocations before mprotect returns, even for a thread that blocks every signal.
#include <gtest/gtest.h>
#include <unistd.h>

#include "pkey_test_util.h"
#include "shim_test_util.h"

using shimt::Has;
using mpkt::RW;
using mpkt::Worker;
using shimt::Mapping;

namespace {

class Threads : public ::testing::Test {
 protected:
  void SetUp() override { mpkt::install_probe_handler(); }
};

TEST_F(Threads, GrantIsLazyAndRevocationIsImmediate) {
  mpkt::Watchdog dog(120, "GrantIsLazyAndRevocationIsImmediate");
  Mapping m(2);
  Worker w(Worker::Wait::kSpin);
  shimt::Toggle(m, 3);
  uint64_t grants = shimt::counter(&mpk::Stats::lazy_grants);
  // The worker's first touch of the group is a plain load: a lazy grant (a system call first
  // would have been caught up before the kernel copied).
  w.Run([&] { EXPECT_GE(mpkt::probe_read(m.base()), 0); });
  if (shimt::emulating()) EXPECT_GT(shimt::counter(&mpk::Stats::lazy_grants), grants);
  w.Run([&] { EXPECT_TRUE(Has(m.base(), RW)); });
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
    w.Run([&] { EXPECT_TRUE(Has(m.base(), PROT_READ)); });
    ASSERT_EQ(mprotect(m.base(), m.bytes(), RW), 0);
    w.Run([&] { EXPECT_TRUE(Has(m.base() + 4096, RW)); });
  }
}

TEST_F(Threads, SystemCallIntoARegionIsRepaired) {
  Mapping m(1);
  Worker w(Worker::Wait::kSleep);
  shimt::Toggle(m, 3);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(write(p[1], "hello", 5), 5);
  uint64_t repairs = shimt::counter(&mpk::Stats::efault_repairs);
  // The worker never touched the region since it became a group: its first access is read(2).
  w.Run([&] { EXPECT_EQ(read(p[0], m.base() + 10, 5), 5) << strerror(errno); });
  EXPECT_EQ(memcmp(m.base() + 10, "hello", 5), 0);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  ASSERT_EQ(write(p[1], "again", 5), 5);
  w.Run([&] {
    errno = 0;
    EXPECT_EQ(read(p[0], m.base() + 10, 5), -1);
    EXPECT_EQ(errno, EFAULT);
  });
  close(p[0]);
  close(p[1]);
  if (shimt::emulating()) EXPECT_GT(shimt::counter(&mpk::Stats::efault_repairs), repairs);
}

TEST_F(Threads, ThreadBlockingEverySignalIsStillRevoked) {
  mpkt::Watchdog dog(120, "ThreadBlockingEverySignalIsStillRevoked");
  Mapping m(1);
  Worker w(Worker::Wait::kSpin, /*block_all_signals=*/true);
  shimt::Toggle(m, 3);
  w.Run([&] { EXPECT_TRUE(mpkt::SyscallsHaveExactly(m.base(), RW)); });
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  w.Run([&] { EXPECT_TRUE(mpkt::SyscallsHaveExactly(m.base(), PROT_READ)); });
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_NONE), 0);
  w.Run([&] { EXPECT_TRUE(mpkt::SyscallsHaveExactly(m.base(), PROT_NONE)); });
}

}  // namespace

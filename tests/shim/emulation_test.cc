// The legacy mprotect emulation seen from an unmodified program: the same answers as the kernel,
// faults where mprotect would put them, and the range really served by a protection key.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "pkey_test_util.h"
#include "shim_test_util.h"

using shimt::Has;
using mpkt::RW;
using shimt::Mapping;

namespace {

class Emulation : public ::testing::Test {
 protected:
  void SetUp() override { mpkt::install_probe_handler(); }
};

TEST_F(Emulation, RepeatedTogglesBecomeAKeyWithExactRights) {
  Mapping m(4);
  uint64_t emulated = shimt::counter(mpk::Hot::legacy_emulated);
  shimt::Toggle(m, 3);
  EXPECT_TRUE(Has(m.base() + 4096, RW));
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  EXPECT_TRUE(Has(m.base() + 4096, PROT_READ));
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_NONE), 0);
  EXPECT_TRUE(Has(m.base(), PROT_NONE));
  ASSERT_EQ(mprotect(m.base(), m.bytes(), RW), 0);
  EXPECT_TRUE(Has(m.base() + 3 * 4096, RW));
  if (!shimt::emulating()) GTEST_SKIP() << "rights checked; emulation itself needs the shim and PKU";
  EXPECT_GT(mpkt::pkey_of(m.base()), 0) << "the toggled range should carry a protection key";
  EXPECT_GE(shimt::counter(mpk::Hot::legacy_emulated) - emulated, 6u);
}

TEST_F(Emulation, ErrorsAreTheKernels) {
  Mapping m(2);
  shimt::Toggle(m, 3);
  errno = 0;
  EXPECT_EQ(mprotect(m.base() + 1, 4096, PROT_READ), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(mprotect(m.base(), m.bytes(), PROT_READ | 0x1000), -1);
  EXPECT_EQ(errno, EINVAL);
  // A range reaching past the mapping: ENOMEM, and the pages that exist keep their rights.
  void *hole = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  ASSERT_EQ(munmap(hole, 4096), 0);
  errno = 0;
  EXPECT_EQ(mprotect(hole, 4096, PROT_READ), -1);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_EQ(mprotect(m.base(), 0, PROT_NONE), 0);
  EXPECT_TRUE(Has(m.base(), RW));
}

TEST_F(Emulation, PartOfAGroupIsAKeyedExceptionThatTheWholeSetsAgain) {
  Mapping m(4);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  int key = shimt::emulating() ? mpkt::pkey_of(m.base()) : 0;
  uint64_t exceptions = shimt::counter(&mpk::Stats::exceptions);
  // The second page alone: it leaves the group's key for a key of its own, at RW; the group
  // keeps the rest.
  ASSERT_EQ(mprotect(m.base() + 4096, 4096, RW), 0);
  EXPECT_TRUE(Has(m.base(), PROT_READ));
  EXPECT_TRUE(Has(m.base() + 4096, RW));
  EXPECT_TRUE(Has(m.base() + 2 * 4096, PROT_READ));
  int own = shimt::emulating() ? mpkt::pkey_of(m.base() + 4096) : 0;
  if (shimt::emulating()) {
    EXPECT_NE(key, 0);
    EXPECT_EQ(mpkt::pkey_of(m.base()), key);
    EXPECT_NE(own, 0);
    EXPECT_NE(own, key);
    EXPECT_EQ(mpkt::pkey_of(m.base() + 2 * 4096), key);
    EXPECT_EQ(shimt::counter(&mpk::Stats::exceptions) - exceptions, 1u);
  }
  // The whole range again: the page takes the group's permission, on its own key still.
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  EXPECT_TRUE(Has(m.base() + 4096, PROT_READ));
  if (shimt::emulating()) EXPECT_EQ(mpkt::pkey_of(m.base() + 4096), own);
  // From now on the page and the whole are PKRU writes, no system call.
  uint64_t emulated = shimt::counter(mpk::Hot::legacy_emulated);
  ASSERT_EQ(mprotect(m.base() + 4096, 4096, RW), 0);
  EXPECT_TRUE(Has(m.base() + 4096, RW));
  EXPECT_TRUE(Has(m.base(), PROT_READ));
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_NONE), 0);
  EXPECT_TRUE(Has(m.base() + 4096, PROT_NONE));
  EXPECT_TRUE(Has(m.base() + 3 * 4096, PROT_NONE));
  ASSERT_EQ(mprotect(m.base(), m.bytes(), RW), 0);
  EXPECT_TRUE(Has(m.base() + 4096, RW));
  EXPECT_TRUE(Has(m.base() + 3 * 4096, RW));
  if (shimt::emulating()) {
    EXPECT_EQ(shimt::counter(mpk::Hot::legacy_emulated) - emulated, 3u);
    EXPECT_EQ(shimt::counter(&mpk::Stats::exceptions) - exceptions, 1u);
    EXPECT_EQ(mpkt::pkey_of(m.base() + 4096), own);
  }
}

TEST_F(Emulation, OtherThreadsFollowAKeyedException) {
  Mapping m(4);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  mpkt::Worker w;
  ASSERT_EQ(mprotect(m.base() + 2 * 4096, 4096, RW), 0);
  w.Run([&] {
    EXPECT_TRUE(Has(m.base() + 2 * 4096, RW));
    EXPECT_TRUE(Has(m.base() + 4096, PROT_READ));
    m.base()[2 * 4096 + 9] = 42;
  });
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  w.Run([&] {
    EXPECT_TRUE(Has(m.base() + 2 * 4096, PROT_READ));
    EXPECT_EQ(mpkt::probe_read(m.base() + 2 * 4096 + 9), 42);
  });
  ASSERT_EQ(mprotect(m.base() + 2 * 4096, 4096, PROT_NONE), 0);
  w.Run([&] { EXPECT_TRUE(Has(m.base() + 2 * 4096, PROT_NONE)); });
  EXPECT_TRUE(Has(m.base() + 2 * 4096, PROT_NONE));
}

TEST_F(Emulation, TheKeyedExceptionOpenedLeastRecentlyGivesWay) {
  Mapping m(8);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  int key = shimt::emulating() ? mpkt::pkey_of(m.base()) : 0;
  // Pages 1, 2 and 3 opened in turn, each closed by a call on the whole: three keyed exceptions.
  for (int page = 1; page <= 3; ++page) {
    ASSERT_EQ(mprotect(m.base() + page * 4096, 4096, RW), 0);
    m.base()[page * 4096] = static_cast<uint8_t>(page);
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  }
  // Page 1 is opened again: it is the most recent now, page 2 the least.
  ASSERT_EQ(mprotect(m.base() + 4096, 4096, RW), 0);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  // A fourth page: page 2 rejoins the group (its key is given up for page 4's).
  ASSERT_EQ(mprotect(m.base() + 4 * 4096, 4096, RW), 0);
  EXPECT_TRUE(Has(m.base() + 4 * 4096, RW));
  EXPECT_TRUE(Has(m.base() + 2 * 4096, PROT_READ));
  if (shimt::emulating()) {
    EXPECT_EQ(mpkt::pkey_of(m.base() + 2 * 4096), key);
    EXPECT_NE(mpkt::pkey_of(m.base() + 4 * 4096), key);
    EXPECT_NE(mpkt::pkey_of(m.base() + 4 * 4096), 0);
    EXPECT_NE(mpkt::pkey_of(m.base() + 4096), key);
    EXPECT_NE(mpkt::pkey_of(m.base() + 3 * 4096), key);
  }
  // Pages 5 and 6 while 1, 3 and 4 are all open: none is back at the group's permission to
  // give way, so these are plain exceptions on the page table.
  ASSERT_EQ(mprotect(m.base() + 4096, 4096, RW), 0);
  ASSERT_EQ(mprotect(m.base() + 3 * 4096, 4096, RW), 0);
  ASSERT_EQ(mprotect(m.base() + 5 * 4096, 4096, PROT_NONE), 0);
  EXPECT_TRUE(Has(m.base() + 5 * 4096, PROT_NONE));
  EXPECT_TRUE(Has(m.base() + 4 * 4096, RW));
  if (shimt::emulating()) EXPECT_EQ(mpkt::pkey_of(m.base() + 5 * 4096), 0);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  for (int page = 0; page < 8; ++page) EXPECT_TRUE(Has(m.base() + page * 4096, PROT_READ)) << "page " << page;
  for (int page = 1; page <= 3; ++page) EXPECT_EQ(mpkt::probe_read(m.base() + page * 4096), page);
  if (shimt::emulating()) EXPECT_EQ(mpkt::pkey_of(m.base() + 5 * 4096), key);
}

TEST_F(Emulation, ACallOnPartOfAKeyedExceptionIsTheKernels) {
  Mapping m(6);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  int key = shimt::emulating() ? mpkt::pkey_of(m.base()) : 0;
  ASSERT_EQ(mprotect(m.base() + 4096, 2 * 4096, RW), 0);  // pages 1-2: a keyed exception
  m.base()[4096] = 5;
  m.base()[2 * 4096] = 6;
  // Page 2 alone: the keyed exception becomes a plain one (its pages on the page table at RW),
  // and page 2 takes R there.
  ASSERT_EQ(mprotect(m.base() + 2 * 4096, 4096, PROT_READ), 0);
  EXPECT_TRUE(Has(m.base() + 4096, RW));
  EXPECT_TRUE(Has(m.base() + 2 * 4096, PROT_READ));
  if (shimt::emulating()) {
    EXPECT_EQ(mpkt::pkey_of(m.base() + 4096), 0);
    EXPECT_EQ(mpkt::pkey_of(m.base() + 2 * 4096), 0);
    EXPECT_EQ(mpkt::pkey_of(m.base() + 3 * 4096), key);
  }
  // Page 4, a keyed exception, then pages 1-4 over it and the plain one: the page table's.
  ASSERT_EQ(mprotect(m.base() + 4 * 4096, 4096, RW), 0);
  if (shimt::emulating()) {
    EXPECT_NE(mpkt::pkey_of(m.base() + 4 * 4096), 0);
    EXPECT_NE(mpkt::pkey_of(m.base() + 4 * 4096), key);
  }
  uint64_t exceptions = shimt::counter(&mpk::Stats::exceptions);
  ASSERT_EQ(mprotect(m.base() + 4096, 4 * 4096, PROT_NONE), 0);
  EXPECT_TRUE(Has(m.base() + 3 * 4096, PROT_NONE));
  EXPECT_TRUE(Has(m.base() + 4 * 4096, PROT_NONE));
  EXPECT_TRUE(Has(m.base() + 5 * 4096, PROT_READ));
  if (shimt::emulating()) {
    EXPECT_EQ(shimt::counter(&mpk::Stats::exceptions) - exceptions, 1u);
    for (int page = 1; page <= 4; ++page) EXPECT_EQ(mpkt::pkey_of(m.base() + page * 4096), 0) << "page " << page;
  }
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  EXPECT_EQ(mpkt::probe_read(m.base() + 4096), 5);
  EXPECT_EQ(mpkt::probe_read(m.base() + 2 * 4096), 6);
  if (shimt::emulating())
    for (int page = 0; page < 6; ++page) EXPECT_EQ(mpkt::pkey_of(m.base() + page * 4096), key) << "page " << page;
  // Unmapped with a keyed exception open: the keys are given back with the pages.
  ASSERT_EQ(mprotect(m.base() + 4096, 4096, RW), 0);
  ASSERT_EQ(munmap(m.base(), m.bytes()), 0);
  m.Forget();
  EXPECT_FALSE(mpkt::is_mapped(m.base() + 4096));
}

TEST_F(Emulation, MunmapAndMapFixedDropTheGroup) {
  Mapping m(4);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  void *p = mmap(m.base() + 4096, 4096, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(p, m.base() + 4096);
  EXPECT_TRUE(Has(m.base() + 4096, RW));
  EXPECT_TRUE(Has(m.base(), PROT_READ));
  if (shimt::emulating()) EXPECT_EQ(mpkt::pkey_of(m.base() + 4096), 0);
  ASSERT_EQ(munmap(m.base(), m.bytes()), 0);
  m.Forget();
  EXPECT_FALSE(mpkt::is_mapped(m.base()));
}

TEST_F(Emulation, MremapMovesThePagesWithTheirRights) {
  Mapping m(2);
  shimt::Toggle(m, 3);
  m.base()[5] = 77;
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  void *q = mremap(m.base(), m.bytes(), 4 * 4096, MREMAP_MAYMOVE);
  ASSERT_NE(q, MAP_FAILED);
  m.Forget();
  auto *b = static_cast<uint8_t *>(q);
  EXPECT_EQ(mpkt::probe_read(b + 5), 77);
  EXPECT_TRUE(Has(b + 4096, PROT_READ));
  EXPECT_EQ(munmap(q, 4 * 4096), 0);
}

// A JIT's cycle: write code, make it executable, run it, make it writable again.
TEST_F(Emulation, RwRxTogglesRunTheNewCode) {
  Mapping m(1);
  for (int round = 0; round < 6; ++round) {
    ASSERT_EQ(mprotect(m.base(), m.bytes(), RW), 0);
    const uint8_t code[] = {0xb8, static_cast<uint8_t>(40 + round), 0, 0, 0, 0xc3};  // mov eax, N; ret
    memcpy(m.base(), code, sizeof code);
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ | PROT_EXEC), 0);
    EXPECT_EQ(mpkt::probe_exec(m.base()), 40 + round);
    mpkt::Fault f;
    EXPECT_FALSE(mpkt::probe_write(m.base() + 100, 1, &f)) << "round " << round;
    EXPECT_EQ(f.fault_code, SEGV_ACCERR);
  }
}

TEST_F(Emulation, ForkChildKeepsTheRights) {
  Mapping m(2);
  shimt::Toggle(m, 3);
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    mpkt::Fault f;
    bool wrote = mpkt::probe_write(m.base(), 1, &f);
    int ok = !wrote && f.fault_code == SEGV_ACCERR;
    ok &= mprotect(m.base(), m.bytes(), RW) == 0;
    ok &= mpkt::probe_write(m.base(), 9);
    ok &= mprotect(m.base(), m.bytes(), PROT_READ) == 0;
    ok &= !mpkt::probe_write(m.base(), 1);
    _exit(ok ? 0 : 3);
  }
  EXPECT_EQ(mpkt::DescribeWaitStatus(mpkt::WaitChild(pid, 60)), "exit 0");
  EXPECT_TRUE(Has(m.base(), PROT_READ));
}

// A call the kernel refuses part way changes the pages before the VMA it refuses, with or without
// the shim: here a group spans anonymous memory and a shared mapping of a file opened read-only,
// and read/write over the last anonymous page and the file fails with EACCES after that page
// became read/write. The page stays the program's at read/write: growing the two anonymous pages
// finds two VMAs (EFAULT), and the group's later calls leave the page alone.
TEST_F(Emulation, ACallRefusedPartWayKeepsWhatTheKernelChanged) {
  constexpr size_t kPage = 4096;
  Mapping m(4, PROT_READ);
  int fd = memfd_create("mpk-partial", 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 2 * kPage), 0);
  int ro = open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDONLY);
  ASSERT_GE(ro, 0);
  ASSERT_EQ(mmap(m.base() + 2 * kPage, 2 * kPage, PROT_READ, MAP_SHARED | MAP_FIXED, ro, 0), m.base() + 2 * kPage);
  close(ro);
  close(fd);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_NONE), 0);
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
  }
  ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_NONE), 0);
  bool grouped = shimt::emulating() && mpkt::pkey_of(m.base()) > 0;
  errno = 0;
  EXPECT_EQ(mprotect(m.base() + kPage, 2 * kPage, RW), -1);
  EXPECT_EQ(errno, EACCES);
  EXPECT_TRUE(Has(m.base() + kPage, RW)) << "the page before the refused VMA";
  EXPECT_TRUE(Has(m.base(), PROT_NONE));
  EXPECT_TRUE(Has(m.base() + 2 * kPage, PROT_NONE));
  // (A resize, not a move: kernels since 6.17 move several VMAs at once.)
  errno = 0;
  EXPECT_EQ(mremap(m.base(), 2 * kPage, 3 * kPage, 0), MAP_FAILED);
  EXPECT_EQ(errno, EFAULT) << "pages 0 and 1 have different permissions: two VMAs";
  EXPECT_TRUE(Has(m.base() + kPage, RW));
  ASSERT_EQ(mprotect(m.base(), kPage, PROT_READ), 0);
  EXPECT_TRUE(Has(m.base() + kPage, RW)) << "a call on another part of the group changed the page";
  if (shimt::emulating()) EXPECT_TRUE(grouped) << "the four pages did not become a group";
}

}  // namespace

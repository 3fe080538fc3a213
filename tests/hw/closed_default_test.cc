// closed_default_test.cc - a new group is closed; mpk_mprotect opens it for the whole process,
// in user code and in system calls; the ceiling; the kinds of mapping mpk_mmap accepts.
#include <sys/syscall.h>
#include <unistd.h>

#include "pkey_test_util.h"

using namespace mpkt;


class ClosedDefault : public mpkt::MpkHwTest {};

TEST_F(ClosedDefault, NewGroupIsClosedInEveryThread) {
  Worker before(Worker::Wait::kSpin);  // exists before the group
  Group g(2);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(HasExactly(g.page(0), PROT_NONE, PkruCheck::kExact));
  EXPECT_TRUE(HasExactly(g.page(1), PROT_NONE, PkruCheck::kExact));
  before.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(g.page(0), PROT_NONE));
    EXPECT_TRUE(HasExactly(g.page(0), PROT_NONE));
    EXPECT_TRUE(HasExactly(g.page(1), PROT_NONE));
  });
  Worker after(Worker::Wait::kSleep);  // created after the group
  after.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(g.page(1), PROT_NONE));
    EXPECT_TRUE(HasExactly(g.page(0), PROT_NONE));
  });
}

TEST_F(ClosedDefault, MprotectOpensAndClosesForEveryThreadInUserCodeAndSyscalls) {
  Worker spinning(Worker::Wait::kSpin);
  Worker sleeping(Worker::Wait::kSleep);
  Group g(1);
  ASSERT_TRUE(g.ok());
  void *p = g.base();
  for (int prot : {PROT_READ, RW, PROT_NONE, RW, PROT_READ, PROT_NONE}) {
    SCOPED_TRACE("mpk_mprotect to " + mpkt::prot_name(prot));
    ASSERT_EQ(mpk_mprotect(g.vkey(), prot), 0) << strerror(errno);
    EXPECT_TRUE(HasExactly(p, prot, PkruCheck::kExact)) << "in the calling thread";
    // Syscalls first, before the other threads touch the page in user mode: a grant must hold
    // for system calls too, not only after a user-mode fault.
    for (Worker *w : {&spinning, &sleeping}) {
      w->Run([&] {
        EXPECT_TRUE(SyscallsHaveExactly(p, prot)) << "in another thread";
        EXPECT_TRUE(HasExactly(p, prot)) << "in another thread";
      });
    }
    Worker fresh(Worker::Wait::kSleep);
    fresh.Run([&] {
      EXPECT_TRUE(SyscallsHaveExactly(p, prot)) << "in a thread created after the change";
      EXPECT_TRUE(HasExactly(p, prot)) << "in a thread created after the change";
    });
  }
}

TEST_F(ClosedDefault, DataSurvivesClosing) {
  Group g(4);
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
  for (size_t i = 0; i < 4 * mpkt::kPage; ++i) g.base()[i] = static_cast<uint8_t>(i * 7 + 3);
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
  EXPECT_TRUE(HasExactly(g.page(3), PROT_NONE, PkruCheck::kExact));
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
  bool same = true;
  for (size_t i = 0; i < 4 * mpkt::kPage; ++i)
    same &= mpkt::probe_read(g.base() + i) == static_cast<uint8_t>(i * 7 + 3);
  EXPECT_TRUE(same) << "contents changed across mpk_mprotect";
}

TEST_F(ClosedDefault, AddedPagesShareTheGroupPermissionAndRaiseTheCeiling) {
  const int v = mpkt::FreshVkey();
  void *a = mpk_mmap(v, nullptr, mpkt::kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(a, MAP_FAILED) << strerror(errno);
  EXPECT_TRUE(HasExactly(a, PROT_NONE, PkruCheck::kExact));
  ASSERT_EQ(mpk_mprotect(v, PROT_READ), 0);
  errno = 0;
  EXPECT_EQ(mpk_mprotect(v, RW), -1) << "the ceiling is still READ";
  EXPECT_EQ(errno, EACCES);
  void *b = mpk_mmap(v, nullptr, 2 * mpkt::kPage, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(b, MAP_FAILED) << strerror(errno);
  // The new pages join with the group's current permission.
  EXPECT_TRUE(HasExactly(b, PROT_READ, PkruCheck::kExact)) << "added pages";
  EXPECT_TRUE(HasExactly(a, PROT_READ, PkruCheck::kExact)) << "first pages";
  // The ceiling is now READ|WRITE for the whole group.
  ASSERT_EQ(mpk_mprotect(v, RW), 0) << strerror(errno);
  EXPECT_TRUE(HasExactly(a, RW, PkruCheck::kExact));
  EXPECT_TRUE(HasExactly(static_cast<char *>(b) + mpkt::kPage, RW, PkruCheck::kExact));
  Worker w;
  w.Run([&] {
    EXPECT_TRUE(SyscallsHaveExactly(a, RW));
    EXPECT_TRUE(HasExactly(a, RW));
    EXPECT_TRUE(HasExactly(b, RW));
  });
  ASSERT_EQ(mpk_mprotect(v, PROT_NONE), 0);
  EXPECT_TRUE(HasExactly(a, PROT_NONE, PkruCheck::kExact));
  EXPECT_TRUE(HasExactly(b, PROT_NONE, PkruCheck::kExact));
  w.Run([&] {
    EXPECT_TRUE(HasExactly(a, PROT_NONE));
    EXPECT_TRUE(HasExactly(b, PROT_NONE));
  });
  ASSERT_EQ(mpk_munmap(v), 0);
  EXPECT_FALSE(mpkt::is_mapped(a));
  EXPECT_FALSE(mpkt::is_mapped(b));
}

TEST_F(ClosedDefault, SharedFileMappingIsAGroupToo) {
  int fd = static_cast<int>(syscall(SYS_memfd_create, "mpk-hw-file", 1u));
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, mpkt::kPage), 0);
  ASSERT_EQ(pwrite(fd, "hello", 5, 0), 5);
  const int v = mpkt::FreshVkey();
  auto *p = static_cast<uint8_t *>(mpk_mmap(v, nullptr, mpkt::kPage, RW, MAP_SHARED, fd, 0));
  ASSERT_NE(static_cast<void *>(p), MAP_FAILED) << strerror(errno);
  EXPECT_TRUE(HasExactly(p + 100, PROT_NONE, PkruCheck::kExact));
  ASSERT_EQ(mpk_mprotect(v, PROT_READ), 0);
  EXPECT_EQ(mpkt::probe_read(p + 0), 'h');
  EXPECT_EQ(mpkt::probe_read(p + 4), 'o');
  EXPECT_TRUE(HasExactly(p + 100, PROT_READ, PkruCheck::kExact));
  ASSERT_EQ(mpk_mprotect(v, RW), 0);
  EXPECT_TRUE(mpkt::probe_write(p, 'J'));
  char c = 0;
  ASSERT_EQ(pread(fd, &c, 1, 0), 1);
  EXPECT_EQ(c, 'J') << "the store did not reach the file";
  ASSERT_EQ(mpk_munmap(v), 0);
  EXPECT_FALSE(mpkt::is_mapped(p));
  close(fd);
}

TEST_F(ClosedDefault, FixedAddressIsHonoured) {
  void *hole = mmap(nullptr, 2 * mpkt::kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  const int v = mpkt::FreshVkey();
  void *p = mpk_mmap(v, hole, mpkt::kPage, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(p, hole) << strerror(errno);
  EXPECT_TRUE(HasExactly(p, PROT_NONE, PkruCheck::kExact));
  ASSERT_EQ(mpk_mprotect(v, RW), 0);
  EXPECT_TRUE(HasExactly(p, RW, PkruCheck::kExact));
  ASSERT_EQ(mpk_munmap(v), 0);
  EXPECT_FALSE(mpkt::is_mapped(p));
  EXPECT_TRUE(mpkt::is_mapped(static_cast<char *>(hole) + mpkt::kPage))
      << "mpk_munmap unmapped a page outside the group";
  munmap(static_cast<char *>(hole) + mpkt::kPage, mpkt::kPage);
}

// PROT_EXEC is a page-table right: mpk_mprotect grants and removes it like mprotect.
TEST_F(ClosedDefault, ExecuteRightFollowsMprotect) {
  static const unsigned char code[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};  // mov $42,%eax; ret
  int fd = static_cast<int>(syscall(SYS_memfd_create, "mpk-hw-code", 1u));
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, mpkt::kPage), 0);
  ASSERT_EQ(pwrite(fd, code, sizeof code, 0), static_cast<ssize_t>(sizeof code));
  const int v = mpkt::FreshVkey();
  void *p = mpk_mmap(v, nullptr, mpkt::kPage, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED) << strerror(errno);
  mpkt::Fault f;
  EXPECT_EQ(mpkt::probe_exec(p, &f), INT32_MIN) << "a closed group must not execute";
  EXPECT_EQ(f.fault_addr, p);
  EXPECT_EQ(mpkt::probe_read(p), -1);
  ASSERT_EQ(mpk_mprotect(v, PROT_READ | PROT_EXEC), 0) << strerror(errno);
  EXPECT_EQ(mpkt::probe_exec(p), 42);
  EXPECT_EQ(mpkt::probe_read(p), 0xb8);
  EXPECT_FALSE(mpkt::probe_write(p, 0xb8)) << "above the ceiling";
  errno = 0;
  EXPECT_EQ(mpk_begin(v, PROT_READ | PROT_EXEC), -1);
  EXPECT_EQ(errno, EINVAL);
  ASSERT_EQ(mpk_mprotect(v, PROT_READ), 0);
  EXPECT_EQ(mpkt::probe_exec(p), INT32_MIN) << "execute right kept after mpk_mprotect(READ)";
  EXPECT_EQ(mpkt::probe_read(p), 0xb8);
  ASSERT_EQ(mpk_mprotect(v, PROT_NONE), 0);
  EXPECT_EQ(mpkt::probe_exec(p), INT32_MIN);
  EXPECT_EQ(mpkt::probe_read(p), -1);
  ASSERT_EQ(mpk_munmap(v), 0);
  close(fd);
}

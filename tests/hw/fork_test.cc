// fork_test.cc - a forked child keeps its groups, rights and a working library.
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "pkey_test_util.h"

using namespace mpkt;

namespace {

// In the child: report a failed step on stderr and exit with its number.
#define CHILD_CHECK(step, cond)                                                          \
  do {                                                                                   \
    ::testing::AssertionResult r_ = (cond);                                              \
    if (!r_) {                                                                           \
      fprintf(stderr, "fork child: step %d failed: %s\n%s\n", step, #cond, r_.message()); \
      _exit(step);                                                                       \
    }                                                                                    \
  } while (0)

::testing::AssertionResult Is(bool b) {
  return b ? ::testing::AssertionSuccess() : ::testing::AssertionFailure() << strerror(errno);
}

// Forks, runs body in the child (which must _exit), and returns the child's wait status.
template <typename F>
int ForkAndWait(F body, int timeout_s = 120) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(static_cast<unsigned>(timeout_s));  // a hang in the child kills it
    body();
    _exit(0);
  }
  return mpkt::WaitChild(pid, timeout_s + 10);
}
}  // namespace

class Fork : public mpkt::MpkHwTest {};

TEST_F(Fork, ChildKeepsGroupsRightsAndAWorkingLibrary) {
  Group rw(1), ro(1), closed(1);
  ASSERT_TRUE(rw.ok() && ro.ok() && closed.ok());
  ASSERT_EQ(mpk_mprotect(rw.vkey(), RW), 0);
  memcpy(rw.base(), "parent", 7);
  ASSERT_EQ(mpk_mprotect(ro.vkey(), RW), 0);
  ro.base()[0] = 0x42;
  ASSERT_EQ(mpk_mprotect(ro.vkey(), PROT_READ), 0);
  int status = ForkAndWait([&] {
    // 1-3: inherited groups keep their rights and contents.
    CHILD_CHECK(1, HasExactly(rw.base() + 8, RW));
    CHILD_CHECK(1, Is(memcmp(rw.base(), "parent", 7) == 0));
    CHILD_CHECK(2, HasExactly(ro.base() + 8, PROT_READ));
    CHILD_CHECK(2, Is(mpkt::probe_read(ro.base()) == 0x42));
    CHILD_CHECK(3, HasExactly(closed.base(), PROT_NONE));
    // 4: mpk_mprotect in the child, grants and revocations.
    CHILD_CHECK(4, Is(mpk_mprotect(closed.vkey(), RW) == 0));
    CHILD_CHECK(4, HasExactly(closed.base(), RW, PkruCheck::kExact));
    CHILD_CHECK(4, Is(mpk_mprotect(rw.vkey(), PROT_NONE) == 0));
    CHILD_CHECK(4, HasExactly(rw.base(), PROT_NONE, PkruCheck::kExact));
    // 5: domains.
    CHILD_CHECK(5, Is(mpk_begin(ro.vkey(), PROT_NONE) == 0));
    CHILD_CHECK(5, HasExactly(ro.base(), PROT_NONE, PkruCheck::kExact));
    CHILD_CHECK(5, Is(mpk_end(ro.vkey()) == 0));
    CHILD_CHECK(5, HasExactly(ro.base(), PROT_READ, PkruCheck::kExact));
    // 6: new groups, the heap.
    const int nv = mpkt::FreshVkey() + 100000;
    void *p = mpk_mmap(nv, nullptr, mpkt::kPage, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHILD_CHECK(6, Is(p != MAP_FAILED));
    CHILD_CHECK(6, HasExactly(p, PROT_NONE, PkruCheck::kExact));
    CHILD_CHECK(6, Is(mpk_mprotect(nv, RW) == 0));
    CHILD_CHECK(6, HasExactly(p, RW, PkruCheck::kExact));
    void *m = mpk_malloc(nv + 1, 100);
    CHILD_CHECK(6, Is(m != nullptr));
    CHILD_CHECK(6, HasExactly(m, PROT_NONE));
    mpk_free(nv + 1, m);
    // 7: a thread in the child, and a revocation that must reach it.
    {
      Worker t(Worker::Wait::kSpin);
      ::testing::AssertionResult r1 = ::testing::AssertionSuccess();
      t.Run([&] { r1 = HasExactly(closed.base(), RW); });
      CHILD_CHECK(7, r1);
      CHILD_CHECK(7, Is(mpk_mprotect(closed.vkey(), PROT_NONE) == 0));
      t.Run([&] {
        r1 = SyscallsHaveExactly(closed.base(), PROT_NONE);
        if (r1) r1 = HasExactly(closed.base(), PROT_NONE);
      });
      CHILD_CHECK(7, r1);
    }
    // 8: munmap in the child.
    CHILD_CHECK(8, Is(mpk_munmap(nv) == 0));
    CHILD_CHECK(8, Is(!mpkt::is_mapped(p)));
    CHILD_CHECK(8, Is(mpk_munmap(nv + 1) == 0));
    errno = 0;
    CHILD_CHECK(8, Is(mpk_mprotect(nv, RW) == -1 && errno == EINVAL));
    _exit(0);
  });
  ASSERT_NE(status, -1) << "the child hung";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "child " << mpkt::DescribeWaitStatus(status) << " (an exit code is the failed step)";
  // The parent is unaffected by what the child did.
  EXPECT_TRUE(HasExactly(rw.base() + 8, RW, PkruCheck::kExact));
  EXPECT_EQ(memcmp(rw.base(), "parent", 7), 0);
  EXPECT_TRUE(HasExactly(closed.base(), PROT_NONE));
  EXPECT_TRUE(HasExactly(ro.base(), PROT_READ));
}

// The parent has other threads (with rights) when it forks; the child has only the forking
// thread, and its revocations must not wait for threads that do not exist there.
TEST_F(Fork, ChildOfAMultiThreadedParentCanRevoke) {
  Worker a(Worker::Wait::kSpin), b(Worker::Wait::kSleep);
  Group g(1);
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(mpk_mprotect(g.vkey(), RW), 0);
  a.Run([&] { EXPECT_TRUE(HasExactly(g.base(), RW)); });
  b.Run([&] { EXPECT_TRUE(HasExactly(g.base(), RW)); });
  ASSERT_EQ(mpk_begin(g.vkey(), RW), 0);  // the forking thread is in a domain too
  int status = ForkAndWait(
      [&] {
        CHILD_CHECK(1, HasExactly(g.base(), RW));
        CHILD_CHECK(2, Is(mpk_end(g.vkey()) == 0));
        for (int i = 0; i < 20; ++i) {
          CHILD_CHECK(3, Is(mpk_mprotect(g.vkey(), PROT_NONE) == 0));
          CHILD_CHECK(3, HasExactly(g.base(), PROT_NONE, PkruCheck::kExact));
          CHILD_CHECK(4, Is(mpk_mprotect(g.vkey(), RW) == 0));
          CHILD_CHECK(4, HasExactly(g.base(), RW, PkruCheck::kExact));
        }
        std::thread([&] {
          CHILD_CHECK(5, HasExactly(g.base(), RW));
        }).join();
        CHILD_CHECK(6, Is(mpk_mprotect(g.vkey(), PROT_NONE) == 0));
        _exit(0);
      },
      60);
  ASSERT_NE(status, -1) << "the child hung";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "child " << mpkt::DescribeWaitStatus(status)
      << " (an exit code is the failed step; SIGALRM means a revocation hung)";
  ASSERT_EQ(mpk_end(g.vkey()), 0);
  a.Run([&] { EXPECT_TRUE(HasExactly(g.base(), RW)) << "parent thread after the fork"; });
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
  b.Run([&] { EXPECT_TRUE(HasExactly(g.base(), PROT_NONE)); });
}

// init_test.cc - mpk_init, and the errors every call reports (EPERM, EINVAL, ENOTSUP).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "pkey_test_util.h"

using mpkt::RW;

namespace {

constexpr const char *kChildEnv = "MPK_HW_TEST_CHILD";

// Runs in a fresh process (re-executed test binary) before main and before anything calls
// mpk_init: every call must fail with EPERM; then mpk_init must work (or report ENOTSUP).
int EpermChildMain() {
  int fails = 0;
  auto expect = [&](const char *what, bool ok) {
    int e = errno;
    fprintf(stderr, "%s %s (errno %d: %s)\n", ok ? "ok  " : "FAIL", what, e, strerror(e));
    if (!ok) fails++;
  };
  errno = 0;
  void *p = mpk_mmap(7, nullptr, 4096, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  expect("mpk_mmap before mpk_init -> MAP_FAILED, EPERM", p == MAP_FAILED && errno == EPERM);
  errno = 0;
  expect("mpk_munmap before mpk_init -> -1, EPERM", mpk_munmap(7) == -1 && errno == EPERM);
  errno = 0;
  expect("mpk_begin before mpk_init -> -1, EPERM", mpk_begin(7, RW) == -1 && errno == EPERM);
  errno = 0;
  expect("mpk_end before mpk_init -> -1, EPERM", mpk_end(7) == -1 && errno == EPERM);
  errno = 0;
  expect("mpk_mprotect before mpk_init -> -1, EPERM",
         mpk_mprotect(7, PROT_READ) == -1 && errno == EPERM);
  errno = 0;
  void *m = mpk_malloc(7, 64);
  expect("mpk_malloc before mpk_init -> NULL, EPERM", m == nullptr && errno == EPERM);
  errno = 0;
  static char not_from_mpk_malloc[64];
  mpk_free(7, not_from_mpk_malloc);
  expect("mpk_free before mpk_init -> errno EPERM", errno == EPERM);

  const bool pku = mpkt::pku_usable();  // before mpk_init: its probe sets errno
  errno = 0;
  int r = mpk_init(100);
  if (pku) {
    expect("mpk_init(100) after the refused calls -> 0", r == 0);
    if (r == 0) {
      errno = 0;
      p = mpk_mmap(7, nullptr, 4096, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      expect("mpk_mmap after mpk_init works", p != MAP_FAILED);
      errno = 0;
      expect("mpk_mprotect after mpk_init works", mpk_mprotect(7, RW) == 0);
      if (p != MAP_FAILED) {
        static_cast<volatile char *>(p)[0] = 1;
        expect("the opened group is writable", static_cast<volatile char *>(p)[0] == 1);
      }
      errno = 0;
      expect("mpk_munmap after mpk_init works", mpk_munmap(7) == 0);
    }
  } else {
    expect("mpk_init(100) without PKU -> -1, ENOTSUP", r == -1 && errno == ENOTSUP);
  }
  return fails == 0 ? 0 : 1;
}

__attribute__((constructor)) void MaybeRunChild() {
  const char *mode = getenv(kChildEnv);
  if (mode == nullptr) return;
  if (strcmp(mode, "eperm") == 0) {
    fflush(stdout);
    _exit(EpermChildMain());
  }
}

// Re-executes this binary with kChildEnv=mode; returns the wait status (-1 on timeout) and
// the child's stderr.
int RunSelf(const char *mode, std::string *err) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -2;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    setenv(kChildEnv, mode, 1);
    char arg0[] = "mpk_hw_tests";
    char *argv[] = {arg0, nullptr};
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  close(fds[1]);
  int status = mpkt::WaitChild(pid, 120);
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) err->append(buf, static_cast<size_t>(n));
  close(fds[0]);
  return status;
}

}  // namespace

// Runs natively too: the EPERM contract does not depend on the CPU.
TEST(Init, EveryCallBeforeInitFailsWithEperm) {
  std::string err;
  int status = RunSelf("eperm", &err);
  ASSERT_NE(status, -1) << "the child hung (killed after 120 s); its stderr:\n" << err;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "child: " << mpkt::DescribeWaitStatus(status) << "; its stderr:\n"
      << err;
}

// Runs natively only: on a CPU with PKU mpk_init succeeds and this path cannot be reached.
TEST(Init, InitWithoutPkuFailsWithEnotsup) {
  if (mpkt::pku_usable())
    GTEST_SKIP() << "this CPU has PKU: mpk_init cannot report ENOTSUP here (the native run on a "
                    "CPU without PKU covers it)";
  errno = 0;
  EXPECT_EQ(mpk_init(100), -1);
  EXPECT_EQ(errno, ENOTSUP);
}

TEST(Init, SecondInitReturnsZeroAndKeepsGroups) {
  MPK_HW_SETUP(100);
  mpkt::Group g(1);
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ | PROT_WRITE), 0);
  g.base()[0] = 42;
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
  EXPECT_EQ(mpk_init(0), 0);
  EXPECT_EQ(mpk_init(100), 0);
  EXPECT_EQ(mpk_init(100), 0);
  // The group, its contents and its permission survive.
  EXPECT_TRUE(mpkt::HasExactly(g.base(), PROT_READ));
  EXPECT_EQ(mpkt::probe_read(g.base()), 42);
  EXPECT_EQ(mpk_mprotect(g.vkey(), PROT_NONE), 0);
  EXPECT_TRUE(mpkt::HasExactly(g.base(), PROT_NONE, mpkt::PkruCheck::kExact));
}

TEST(Init, RejectsEvictRateOutsideZeroToHundred) {
  MPK_HW_SETUP(100);
  errno = 0;
  EXPECT_EQ(mpk_init(101), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(mpk_init(-1), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(mpk_init(100), 0);
}

TEST(Errors, NegativeVkeyIsEinval) {
  MPK_HW_SETUP(100);
  for (int v : {-1, -2, INT32_MIN}) {
    SCOPED_TRACE("vkey " + std::to_string(v));
    errno = 0;
    EXPECT_EQ(mpk_mmap(v, nullptr, 4096, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), MAP_FAILED);
    EXPECT_EQ(errno, EINVAL);
    mpkt::ExpectUnknownVkey(v);
    errno = 0;
    EXPECT_EQ(mpk_malloc(v, 16), nullptr);
    EXPECT_EQ(errno, EINVAL);
  }
}

TEST(Errors, UnknownVkeyIsEinval) {
  MPK_HW_SETUP(100);
  const int v = mpkt::FreshVkey();  // never created
  mpkt::ExpectUnknownVkey(v);
  // Those refusals created nothing: the vkey is still unknown.
  errno = 0;
  EXPECT_EQ(mpk_mprotect(v, PROT_NONE), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Errors, BadArgumentsAreEinval) {
  MPK_HW_SETUP(100);
  const int v = mpkt::FreshVkey();
  errno = 0;
  EXPECT_EQ(mpk_mmap(v, nullptr, 0, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), MAP_FAILED)
      << "zero length";
  EXPECT_EQ(errno, EINVAL);
  mpkt::Group g(1, RW, v);
  ASSERT_TRUE(g.ok());
  for (int prot : {PROT_EXEC, PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE | PROT_EXEC}) {
    errno = 0;
    EXPECT_EQ(mpk_begin(v, prot), -1) << "mpk_begin with " << prot;
    EXPECT_EQ(errno, EINVAL) << "mpk_begin with PROT_EXEC must be EINVAL, prot " << prot;
  }
  errno = 0;
  EXPECT_EQ(mpk_mprotect(v, 0x100), -1) << "unknown prot bit";
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(mpk_begin(v, 0x100), -1) << "unknown prot bit";
  EXPECT_EQ(errno, EINVAL);
  // None of that changed the group: still closed.
  EXPECT_TRUE(mpkt::HasExactly(g.base(), PROT_NONE));
}

TEST(Errors, RightAboveCeilingIsEaccesAndChangesNothing) {
  MPK_HW_SETUP(100);
  mpkt::Group g(2, PROT_READ);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(mpkt::HasExactly(g.base(), PROT_NONE));
  errno = 0;
  EXPECT_EQ(mpk_mprotect(g.vkey(), PROT_READ | PROT_WRITE), -1);
  EXPECT_EQ(errno, EACCES);
  errno = 0;
  EXPECT_EQ(mpk_begin(g.vkey(), PROT_READ | PROT_WRITE), -1);
  EXPECT_EQ(errno, EACCES);
  errno = 0;
  EXPECT_EQ(mpk_mprotect(g.vkey(), PROT_READ | PROT_EXEC), -1);
  EXPECT_EQ(errno, EACCES);
  // Still closed after the refusals.
  EXPECT_TRUE(mpkt::HasExactly(g.page(1), PROT_NONE));
  // Within the ceiling works.
  ASSERT_EQ(mpk_mprotect(g.vkey(), PROT_READ), 0);
  EXPECT_TRUE(mpkt::HasExactly(g.page(0), PROT_READ, mpkt::PkruCheck::kExact));
  EXPECT_TRUE(mpkt::HasExactly(g.page(1), PROT_READ, mpkt::PkruCheck::kExact));
  // A refused raise leaves the read right in place.
  errno = 0;
  EXPECT_EQ(mpk_mprotect(g.vkey(), PROT_READ | PROT_WRITE), -1);
  EXPECT_EQ(errno, EACCES);
  EXPECT_TRUE(mpkt::HasExactly(g.page(0), PROT_READ, mpkt::PkruCheck::kExact));
}

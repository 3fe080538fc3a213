// Signals under the shim: the program's handlers are reported and called as its own, run with
// their thread's rights, and the shim's signals can be neither blocked nor taken over.
#include <dlfcn.h>
#include <setjmp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pkey_test_util.h"
#include "shim_test_util.h"

using mpkt::RW;
using shimt::Has;
using shimt::Mapping;

namespace {

class Signals : public ::testing::Test {
 protected:
  void SetUp() override { mpkt::install_probe_handler(); }
};

uint8_t *g_target;
volatile int g_handler_wrote;
void write_from_handler(int) {
  g_target[7] = 0x5a;
  g_handler_wrote = g_target[7];
}

TEST_F(Signals, HandlerWithEverySignalBlockedWritesWithItsThreadsRights) {
  Mapping m(1);
  shimt::Toggle(m, 3);
  g_target = m.base();
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = write_from_handler;
  sigfillset(&sa.sa_mask);  // SIGSEGV too: a fault in the handler would kill the process
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  g_handler_wrote = 0;
  ASSERT_EQ(raise(SIGUSR1), 0);
  EXPECT_EQ(g_handler_wrote, 0x5a);
  struct sigaction now;
  ASSERT_EQ(sigaction(SIGUSR1, &old, &now), 0);
  EXPECT_EQ(now.sa_handler, write_from_handler) << "sigaction must report the program's handler";
}

TEST_F(Signals, SegvHandlerIsReportedAsTheProgramsOwn) {
  struct sigaction now;
  ASSERT_EQ(sigaction(SIGSEGV, nullptr, &now), 0);
  ASSERT_TRUE(now.sa_flags & SA_SIGINFO);
  Dl_info info;
  ASSERT_NE(dladdr(reinterpret_cast<void *>(now.sa_sigaction), &info), 0);
  EXPECT_EQ(strstr(info.dli_fname, "libmpk_shim"), nullptr) << info.dli_fname;
}

sigjmp_buf g_jump_back;
void jump_back(int) { siglongjmp(g_jump_back, 1); }

// A SIGSEGV handler left with siglongjmp has ended: a revocation from another thread then
// reaches this thread at once (taken for still inside a handler, it would defer every sync
// signal, and the revocation would give up after 2 s and fall back to the page table).
TEST_F(Signals, ASiglongjmpOutOfAHandlerEndsIt) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = jump_back;
  ASSERT_EQ(sigaction(SIGSEGV, &sa, &old), 0);
  void *hole = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  ASSERT_EQ(munmap(hole, 4096), 0);
  volatile int jumped = 0;
  if (sigsetjmp(g_jump_back, 1) == 0) *static_cast<volatile int *>(hole) = 1;  // unmapped: the program's own fault
  else jumped = 1;
  ASSERT_EQ(sigaction(SIGSEGV, &old, nullptr), 0);
  ASSERT_EQ(jumped, 1);
  Mapping m(2);
  shimt::Toggle(m, 3);
  m.base()[0] = 1;  // this thread holds read/write
  uint64_t fallbacks = shimt::counter(&mpk::Stats::sync_fallbacks);
  mpkt::Worker w;
  w.Run([&] { ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0); });
  EXPECT_TRUE(Has(m.base(), PROT_READ));
  EXPECT_EQ(shimt::counter(&mpk::Stats::sync_fallbacks), fallbacks) << "the revocation gave up on this thread";
  if (shimt::emulating()) EXPECT_GT(mpkt::pkey_of(m.base()), 0) << "the range fell back to the page table";
}

sigset_t g_mask_in_handler;
void note_mask(int) {
  pthread_sigmask(SIG_BLOCK, nullptr, &g_mask_in_handler);
  siglongjmp(g_jump_back, 1);
}

// The program's SIGSEGV handler runs with the mask the kernel would give it: the interrupted
// mask, its own sa_mask and SIGSEGV, and nothing more (the shim's own handler blocks every
// asynchronous signal while it works, and must open them again for the program's handler).
TEST_F(Signals, SegvHandlerRunsWithTheKernelsMask) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = note_mask;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGUSR1);
  ASSERT_EQ(sigaction(SIGSEGV, &sa, &old), 0);
  sigset_t block, before;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &before), 0);
  void *hole = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  sigemptyset(&g_mask_in_handler);
  volatile int jumped = 0;
  if (sigsetjmp(g_jump_back, 1) == 0) *static_cast<volatile int *>(hole) = 1;
  else jumped = 1;
  ASSERT_EQ(sigaction(SIGSEGV, &old, nullptr), 0);
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &before, nullptr), 0);
  ASSERT_EQ(munmap(hole, 4096), 0);
  ASSERT_EQ(jumped, 1);
  EXPECT_TRUE(sigismember(&g_mask_in_handler, SIGSEGV));
  EXPECT_TRUE(sigismember(&g_mask_in_handler, SIGUSR1)) << "the handler's own sa_mask";
  EXPECT_TRUE(sigismember(&g_mask_in_handler, SIGUSR2)) << "the interrupted mask";
  for (int sig : {SIGALRM, SIGHUP, SIGCHLD, SIGTERM, SIGRTMIN})
    EXPECT_FALSE(sigismember(&g_mask_in_handler, sig)) << "signal " << sig << " blocked in the handler";
  sigset_t now;
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, nullptr, &now), 0);
  EXPECT_FALSE(sigismember(&now, SIGALRM)) << "siglongjmp restores the saved mask";
}

TEST(SignalsChild, IgnoredSegvStaysIgnored) {
  if (!getenv("MPK_SHIM_TEST_SEGV_IGNORED")) GTEST_SKIP() << "the child of SignalsAtStart.SegvIgnoredAtStartStaysIgnored";
  struct sigaction now;
  ASSERT_EQ(sigaction(SIGSEGV, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, SIG_IGN) << "sigaction must report the disposition the program started with";
  ASSERT_EQ(kill(getpid(), SIGSEGV), 0);  // ignored, as the kernel would
  ASSERT_EQ(raise(SIGSEGV), 0);
}

// A program started with SIGSEGV ignored (SIG_IGN survives exec) sees it ignored: sigaction says
// so and a SIGSEGV sent to it does nothing, with the shim's handler in the kernel as without it.
TEST(SignalsAtStart, SegvIgnoredAtStartStaysIgnored) {
  if (getenv("MPK_SHIM_TEST_SEGV_IGNORED")) GTEST_SKIP() << "the child itself";
  shimt::ChildResult r = shimt::RunSelf("SignalsChild.*", {{"MPK_SHIM_TEST_SEGV_IGNORED", "1"}}, {SIGSEGV});
  EXPECT_EQ(r.status, "exit 0") << r.output;
  EXPECT_EQ(r.output.find("Skipped"), std::string::npos) << r.output;
}

TEST_F(Signals, MaskKeepsTheProgramsView) {
  sigset_t block, old, now;
  sigemptyset(&block);
  sigaddset(&block, SIGSEGV);
  sigaddset(&block, SIGUSR2);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, nullptr, &now), 0);
  EXPECT_TRUE(sigismember(&now, SIGSEGV));
  EXPECT_TRUE(sigismember(&now, SIGUSR2));
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &old, nullptr), 0);
  ASSERT_EQ(sigprocmask(SIG_BLOCK, nullptr, &now), 0);
  EXPECT_FALSE(sigismember(&now, SIGSEGV));
}

TEST_F(Signals, SyncSignalCannotBeTakenOver) {
  SHIM_SKIP_UNLESS_EMULATING();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  errno = 0;
  EXPECT_EQ(sigaction(SIGRTMAX - 2, &sa, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  sigset_t all, now;
  sigfillset(&all);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &all, &now), 0);
  sigset_t blocked;
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &now, &blocked), 0);
  EXPECT_FALSE(sigismember(&blocked, SIGRTMAX - 2)) << "the sync signal must stay deliverable";
}

TEST_F(Signals, ProgramKeysCoexist) {
  SHIM_SKIP_UNLESS_EMULATING();
  Mapping m(1);
  shimt::Toggle(m, 3);
  int shim_key = mpkt::pkey_of(m.base());
  ASSERT_GT(shim_key, 0);
  errno = 0;
  EXPECT_EQ(pkey_free(shim_key), -1) << "a key the program never allocated";
  EXPECT_EQ(errno, EINVAL);
  int mine = pkey_alloc(0, PKEY_DISABLE_WRITE);
  ASSERT_GT(mine, 0) << strerror(errno);
  EXPECT_NE(mine, shim_key);
  Mapping own(1);
  ASSERT_EQ(pkey_mprotect(own.base(), own.bytes(), RW, mine), 0);
  EXPECT_EQ(mpkt::pkey_of(own.base()), mine);
  shimt::Toggle(m, 2);  // the shim rewrites PKRU: the program's key keeps its bits
  EXPECT_EQ(mpkt::pkru_prot(mpkt::rdpkru(), mine), PROT_READ);
  mpkt::Fault f;
  EXPECT_FALSE(mpkt::probe_write(own.base(), 1, &f));
  EXPECT_EQ(f.fault_code, mpkt::kSegvPkuErr);
  EXPECT_EQ(f.fault_pkey, mine) << "the program's own key faults reach it unchanged";
  ASSERT_EQ(pkey_mprotect(own.base(), own.bytes(), RW, 0), 0);
  EXPECT_EQ(pkey_free(mine), 0);
}

}  // namespace

// gates_test.cc - call gates ([[region.gate]]) under LD_PRELOAD=libmpk_shim.so and
// tests/sim/shim/gates.toml, with the fixture library libmpk_gate_fixture.so, whose gate_*
// functions open the region "vault". On simulated keys (MPK_SIMULATE=1, any CPU) and, as
// mpk_gate_tests_qemu, with real keys in the guest: each check reads the calling thread's own
// right on the region's key (the simulated register, or RDPKRU), inside and outside the gates.
// The program is linked -z now (mpk_gate_tests: its GOT is read-only when the shim patches it)
// and lazily (mpk_gate_tests_lazy: its PLT slots are not bound yet).
#include <gtest/gtest.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csetjmp>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "shim_sim_util.h"

extern "C" {
int gate_probe(int (*probe)(void));
int plain_probe(int (*probe)(void));
void *gate_alloc(size_t n);
void gate_free(void *p);
unsigned gate_sum(const unsigned char *p, size_t n);
void gate_throw(int v);
void gate_longjmp(jmp_buf *env);
double gate_args(int a, int b, int c, int d, int e, int f, int g, int h, double x, int n, ...);
struct Big {
  long v[6];
};
Big gate_big(Big in, long add);
}

namespace {

int g_key = -1;

// The calling thread's right on the vault's key: 0 none, 1 read, 2 read/write.
int rights_now() {
  if (shimsim::simulating()) return shimsim::own_rights(g_key);
  uint32_t eax, edx;
  asm volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
  return shimsim::pkru_rights(eax, g_key);
}
int probe() { return rights_now(); }

int vault_key() {
  const mpk::StatsPage *s = shimsim::stats();
  if (!s) return -1;
  for (const mpk::RegionSlot &r : s->regions)
    if (r.used.load() && std::strcmp(r.name, "vault") == 0) return r.key.load();
  return -1;
}

bool cpu_has_pku() {
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return false;
  char line[4096];
  bool pku = false;
  while (!pku && fgets(line, sizeof line, f))
    if (!strncmp(line, "flags", 5)) pku = strstr(line, " pku") && strstr(line, " ospke");
  fclose(f);
  return pku;
}

class Gates : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!getenv("MPK_CONFIG")) GTEST_SKIP() << "run by mpk_gate_tests* (with its policy)";
    const mpk::StatsPage *s = shimsim::stats();
    if (!s || !s->active.load()) {
      // Natively on a CPU without PKU (no MPK_SIMULATE) the shim passes through; the simulated
      // run and the guest run cover this.
      if (!getenv("MPK_SIMULATE") && !cpu_has_pku()) GTEST_SKIP() << "no PKU and not simulating";
      FAIL() << "the shim is not active";
    }
    g_key = vault_key();
    ASSERT_GT(g_key, 0) << "the vault region has no key";
    alarm(120);
  }
  void TearDown() override { alarm(0); }
};

TEST_F(Gates, AGatedCallHoldsTheRightOnlyWhileItRuns) {
  EXPECT_EQ(rights_now(), 0) << "no rule gives this thread a right";
  EXPECT_EQ(gate_probe(probe), 2) << "inside a gated call: read/write";
  EXPECT_EQ(rights_now(), 0) << "back: none";
  EXPECT_EQ(plain_probe(probe), 0) << "a function the gate does not name opens nothing";
}

TEST_F(Gates, WhatAGateAllocatesComesFromTheRegion) {
  uint64_t a0 = shimsim::counter(&mpk::Stats::region_allocs);
  auto *p = static_cast<unsigned char *>(gate_alloc(100));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(shimsim::counter(&mpk::Stats::region_allocs) - a0, 1u);
  void *q = malloc(100);  // outside a gate: glibc's
  EXPECT_EQ(shimsim::counter(&mpk::Stats::region_allocs) - a0, 1u);
  free(q);
  EXPECT_EQ(gate_sum(p, 100), 0u) << "a fresh region block, read inside a gate";
  gate_free(p);
}

TEST_F(Gates, AnExceptionThroughTheGateClosesIt) {
  uint64_t a0 = shimsim::counter(&mpk::Stats::region_allocs);
  for (int i = 0; i < 3; ++i) {
    int caught = 0;
    try {
      gate_throw(41 + i);
    } catch (int v) {
      caught = v;
    }
    EXPECT_EQ(caught, 41 + i);
    EXPECT_EQ(rights_now(), 0) << "the exception left the gate";
  }
  // The exception object outlives the gate (the handler reads it): never the region's.
  EXPECT_EQ(shimsim::counter(&mpk::Stats::region_allocs), a0);
  EXPECT_EQ(gate_probe(probe), 2) << "the gate still works";
  EXPECT_EQ(rights_now(), 0);
}

TEST_F(Gates, ALongjmpOutOfTheGateClosesIt) {
  jmp_buf env;
  volatile int rounds = 0;
  if (setjmp(env) == 0) gate_longjmp(&env);
  rounds = rounds + 1;
  EXPECT_EQ(rounds, 1);
  EXPECT_EQ(rights_now(), 0) << "the longjmp left the gate";
  EXPECT_EQ(gate_probe(probe), 2);
  EXPECT_EQ(rights_now(), 0);
}

int nested_probe() {
  int inner = gate_probe(probe);  // a gate inside a gate
  int after_inner = rights_now();
  return inner * 10 + after_inner;
}

TEST_F(Gates, NestedGatesCloseAtTheOutermostReturn) {
  EXPECT_EQ(gate_probe(nested_probe), 22) << "inner: rw; back in the outer gate: still rw";
  EXPECT_EQ(rights_now(), 0);
}

TEST_F(Gates, ArgumentsAndResultsPassUntouched) {
  EXPECT_DOUBLE_EQ(gate_args(1, 2, 3, 4, 5, 6, 7, 8, 0.5, 3, 1.0, 2.0, 4.0), 36.5 + 7.0);
  Big b{{1, 2, 3, 4, 5, 6}};
  Big r = gate_big(b, 10);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r.v[i], b.v[i] + 10) << i;
  EXPECT_EQ(rights_now(), 0);
}

std::atomic<int> g_handler_inside{-1}, g_handler_after{-1};
void on_usr1(int) {
  g_handler_inside = gate_probe(probe);  // a gated call from a signal handler
  g_handler_after = rights_now();
}
int raise_probe() {
  raise(SIGUSR1);  // delivered inside the gate
  return rights_now();
}

TEST_F(Gates, ASignalHandlerMayEnterAGateInsideAGate) {
  struct sigaction sa {}, old {};
  sa.sa_handler = on_usr1;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  EXPECT_EQ(gate_probe(raise_probe), 2) << "the outer gate is still open after the handler";
  EXPECT_EQ(g_handler_inside.load(), 2);
  EXPECT_EQ(rights_now(), 0);
  sigaction(SIGUSR1, &old, nullptr);
}

TEST_F(Gates, ThreadsGateIndependently) {
  constexpr int kThreads = 4, kRounds = 2000;
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&] {
      for (int r = 0; r < kRounds; ++r) {
        if (gate_probe(probe) != 2) bad.fetch_add(1);
        if (rights_now() != 0) bad.fetch_add(1);
      }
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(Gates, ReadingTheRegionOutsideAGateIsStopped) {
  if (shimsim::simulating()) GTEST_SKIP() << "simulated keys refuse nothing: mpk_gate_tests_qemu checks this";
  auto *p = static_cast<volatile unsigned char *>(gate_alloc(64));
  ASSERT_NE(p, nullptr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    unsigned char v = p[0];  // outside any gate: a violation, fatal in enforce mode
    _exit(v == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) << "status " << status;
  EXPECT_EQ(gate_sum(const_cast<unsigned char *>(p), 64), 0u) << "inside a gate it is readable";
  gate_free(const_cast<unsigned char *>(p));
}

int nop_probe() { return 0; }

TEST_F(Gates, AGatedCallWritesThePkruTwice) {
  constexpr int kCalls = 10000;
  gate_probe(nop_probe);
  uint64_t w0 = shimsim::counter(mpk::Hot::wrpkru);
  for (int i = 0; i < kCalls; ++i) gate_probe(nop_probe);
  uint64_t per_100 = (shimsim::counter(mpk::Hot::wrpkru) - w0) * 100 / kCalls;
  EXPECT_LE(per_100, 200u) << "PKRU writes per 100 gated calls";
  EXPECT_GE(per_100, 200u) << "a gated call opens and closes: two writes";
}

}  // namespace

// core_bench.cc - cost of libmpk's permission changes against native mprotect and raw WRPKRU.
//
// What is measured (each benchmark reports wall-clock nanoseconds per iteration):
//   native_mprotect_toggle/N     mprotect(READ) + mprotect(READ|WRITE) on N pre-faulted pages
//   mpk_mprotect_resident/N      mpk_mprotect(READ) + mpk_mprotect(READ|WRITE) on a group of N
//                                pages that holds a key the whole time
//   mpk_mprotect_evicting/N      two mpk_mprotect() calls, each flipping a different group of N
//                                pages (READ <-> READ|WRITE), round-robin over more groups than
//                                keys, so every call misses the key cache and evicts
//   mpk_begin_end/N              mpk_begin(READ|WRITE) + mpk_end() on a resident group of N pages
//   raw_wrpkru_pair              RDPKRU, WRPKRU(changed value), WRPKRU(original value); only where
//                                the CPU has PKU and the kernel enabled it (OSPKE)
//
// Every benchmark also reports the counter "wrpkru": PKRU writes the engine made per iteration,
// counted over the timed loop (stats.h: hot_total(Hot::wrpkru)); the engine is linked in
// statically for that. With MPK_SIMULATE=1 the engine runs on simulated keys (a software PKRU per
// thread; tagging pages is a plain mprotect), so the times are the software part only and the
// count prices the PKRU writes with a model (scripts/bench-core).
//
// Every page is written before timing, so native mprotect really changes present page-table
// entries. The process stays single-threaded. libmpk is initialised with evict_rate 100: every
// key-cache miss evicts.
//
// Extra flags (before the --benchmark_* ones are parsed):
//   --evict-groups=N   number of groups in the evicting benchmark (default 16, minimum 16)
// Exit status: 0, 1 on error, 77 when mpk_init finds no protection keys (no PKU and no
// MPK_SIMULATE=1).

#include <mpk.h>

#include <benchmark/benchmark.h>
#include <cpuid.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "stats.h"

namespace {

constexpr int kRW = PROT_READ | PROT_WRITE;
constexpr int kR = PROT_READ;
int g_evict_groups = 16;
size_t g_page = 4096;

inline uint32_t raw_rdpkru() {
  uint32_t eax, edx;
  asm volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0) : "memory");
  return eax;
}

inline void raw_wrpkru(uint32_t v) {
  asm volatile(".byte 0x0f,0x01,0xef" : : "a"(v), "c"(0), "d"(0) : "memory");
}

// RDPKRU/WRPKRU raise #UD unless the OS enabled protection keys (CPUID.7.0:ECX.OSPKE).
bool cpu_ospke() {
  unsigned a, b, c, d;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 4));
}

uint64_t wrpkru_now() { return mpk::hot_total(mpk::Hot::wrpkru); }

void prefault(void *p, size_t len) {
  volatile char *c = static_cast<volatile char *>(p);
  for (size_t off = 0; off < len; off += g_page) c[off] = 1;
}

// One live set of mappings at a time: the benchmark families run one after the other, each over
// its page counts, so the previous fixture is released before the next is built. This keeps the
// peak footprint at one fixture (the largest is 16 groups x 4096 pages = 256 MiB).
enum class Kind { None, Native, Resident, Evicting, BeginEnd };

struct Fixture {
  Kind kind = Kind::None;
  int pages = 0;
  void *native = nullptr;        // Native
  size_t len = 0;
  std::vector<int> vkeys;        // Resident, Evicting, BeginEnd
  std::vector<int> prot;         // current process-wide right of each group (Evicting)
  size_t next = 0;               // round-robin cursor (Evicting)
};

Fixture g_fix;
int g_next_vkey = 1000;

void release() {
  if (g_fix.native) munmap(g_fix.native, g_fix.len);
  for (int v : g_fix.vkeys) mpk_munmap(v);
  g_fix = Fixture{};
}

std::string errmsg(const char *what) { return std::string(what) + ": " + std::strerror(errno); }

// Builds the fixture for (kind, pages) unless it is the current one. Returns "" or an error.
std::string ensure(Kind kind, int pages) {
  if (g_fix.kind == kind && g_fix.pages == pages) return {};
  release();
  g_fix.kind = kind;
  g_fix.pages = pages;
  g_fix.len = static_cast<size_t>(pages) * g_page;
  switch (kind) {
    case Kind::Native: {
      void *p = mmap(nullptr, g_fix.len, kRW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return errmsg("mmap");
      g_fix.native = p;
      prefault(p, g_fix.len);
      return {};
    }
    case Kind::Resident:
    case Kind::BeginEnd: {
      int v = g_next_vkey++;
      void *p = mpk_mmap(v, nullptr, g_fix.len, kRW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return errmsg("mpk_mmap");
      g_fix.vkeys.push_back(v);
      if (kind == Kind::Resident) {
        // Open the group for the process: this loads it into a key.
        if (mpk_mprotect(v, kRW) != 0) return errmsg("mpk_mprotect (load)");
        prefault(p, g_fix.len);
      } else {
        // The group stays closed process-wide; a thread-local domain loads it.
        if (mpk_begin(v, kRW) != 0) return errmsg("mpk_begin (load)");
        prefault(p, g_fix.len);
        if (mpk_end(v) != 0) return errmsg("mpk_end (load)");
      }
      return {};
    }
    case Kind::Evicting: {
      for (int i = 0; i < g_evict_groups; i++) {
        int v = g_next_vkey++;
        void *p = mpk_mmap(v, nullptr, g_fix.len, kRW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return errmsg("mpk_mmap");
        g_fix.vkeys.push_back(v);
        if (mpk_mprotect(v, kRW) != 0) return errmsg("mpk_mprotect (open)");
        prefault(p, g_fix.len);
        g_fix.prot.push_back(kRW);
      }
      return {};
    }
    case Kind::None:
      break;
  }
  return {};
}

bool setup(benchmark::State &state, Kind kind, int pages) {
  std::string err = ensure(kind, pages);
  if (err.empty()) return true;
  release();
  state.SkipWithError(err.c_str());
  return false;
}

// PKRU writes per iteration over the timed loop just ended.
void report(benchmark::State &state, int pages, uint64_t wrpkru_before) {
  uint64_t n = wrpkru_now() - wrpkru_before;
  if (pages) state.counters["pages"] = pages;
  state.counters["wrpkru"] =
      state.iterations() ? static_cast<double>(n) / static_cast<double>(state.iterations()) : 0.0;
}

void BM_native_mprotect_toggle(benchmark::State &state) {
  const int pages = static_cast<int>(state.range(0));
  if (!setup(state, Kind::Native, pages)) return;
  void *p = g_fix.native;
  const size_t len = g_fix.len;
  uint64_t w0 = wrpkru_now();
  for (auto _ : state) {
    if (mprotect(p, len, kR) != 0 || mprotect(p, len, kRW) != 0) {
      state.SkipWithError(errmsg("mprotect").c_str());
      break;
    }
  }
  report(state, pages, w0);
}

void BM_mpk_mprotect_resident(benchmark::State &state) {
  const int pages = static_cast<int>(state.range(0));
  if (!setup(state, Kind::Resident, pages)) return;
  const int v = g_fix.vkeys[0];
  uint64_t w0 = wrpkru_now();
  for (auto _ : state) {
    if (mpk_mprotect(v, kR) != 0 || mpk_mprotect(v, kRW) != 0) {
      state.SkipWithError(errmsg("mpk_mprotect").c_str());
      break;
    }
  }
  report(state, pages, w0);
}

void BM_mpk_mprotect_evicting(benchmark::State &state) {
  const int pages = static_cast<int>(state.range(0));
  if (!setup(state, Kind::Evicting, pages)) return;
  const size_t n = g_fix.vkeys.size();
  const int *vk = g_fix.vkeys.data();
  int *prot = g_fix.prot.data();
  size_t i = g_fix.next;
  uint64_t w0 = wrpkru_now();
  for (auto _ : state) {
    // Two calls per iteration, on two different groups: each is a key-cache miss, since the
    // groups are visited round-robin and there are more of them than keys.
    size_t a = i, b = i + 1 == n ? 0 : i + 1;
    i = b + 1 == n ? 0 : b + 1;
    int pa = prot[a] == kRW ? kR : kRW;
    int pb = prot[b] == kRW ? kR : kRW;
    if (mpk_mprotect(vk[a], pa) != 0 || mpk_mprotect(vk[b], pb) != 0) {
      state.SkipWithError(errmsg("mpk_mprotect").c_str());
      break;
    }
    prot[a] = pa;
    prot[b] = pb;
  }
  g_fix.next = i;
  report(state, pages, w0);
}

void BM_mpk_begin_end(benchmark::State &state) {
  const int pages = static_cast<int>(state.range(0));
  if (!setup(state, Kind::BeginEnd, pages)) return;
  const int v = g_fix.vkeys[0];
  uint64_t w0 = wrpkru_now();
  for (auto _ : state) {
    if (mpk_begin(v, kRW) != 0 || mpk_end(v) != 0) {
      state.SkipWithError(errmsg("mpk_begin/mpk_end").c_str());
      break;
    }
  }
  report(state, pages, w0);
}

void BM_raw_wrpkru_pair(benchmark::State &state) {
  release();
  for (auto _ : state) {
    uint32_t old = raw_rdpkru();
    // Flip key 15's access/write-disable bits and put them back. Key 0 (stack, TLS) is never
    // touched and no memory is accessed between the two writes.
    raw_wrpkru(old ^ 0xC0000000u);
    raw_wrpkru(old);
  }
  state.counters["wrpkru"] = 2;
}

void register_all(bool raw_pair) {
  const int kPages[] = {1, 16, 256, 4096};
  auto add = [&](const char *name, void (*fn)(benchmark::State &)) {
    auto *b = benchmark::RegisterBenchmark(name, fn);
    for (int p : kPages) b->Arg(p);
    b->ArgName("pages")->UseRealTime()->Unit(benchmark::kNanosecond);
  };
  add("native_mprotect_toggle", BM_native_mprotect_toggle);
  add("mpk_mprotect_resident", BM_mpk_mprotect_resident);
  add("mpk_mprotect_evicting", BM_mpk_mprotect_evicting);
  add("mpk_begin_end", BM_mpk_begin_end);
  if (raw_pair)
    benchmark::RegisterBenchmark("raw_wrpkru_pair", BM_raw_wrpkru_pair)
        ->UseRealTime()
        ->Unit(benchmark::kNanosecond);
}

std::string cpu_context() {
  unsigned a, b, c, d;
  std::string s;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    s += (c & (1u << 3)) ? "pku" : "no-pku";
    s += (c & (1u << 4)) ? " ospke" : " no-ospke";
  }
  if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 31))) s += " hypervisor";
  return s;
}

bool simulation_requested() {
  const char *v = getenv("MPK_SIMULATE");
  return v && (!std::strcmp(v, "1") || !std::strcmp(v, "yes") || !std::strcmp(v, "true"));
}

}  // namespace

int main(int argc, char **argv) {
  // Our own flags first; benchmark::Initialize removes its own and we reject the rest.
  int out = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (std::strncmp(a, "--evict-groups=", 15) == 0) {
      g_evict_groups = std::atoi(a + 15);
      if (g_evict_groups < 16 || g_evict_groups > 4096) {
        std::fprintf(stderr, "mpk_core_bench: --evict-groups must be 16..4096\n");
        return 1;
      }
      continue;
    }
    argv[out++] = argv[i];
  }
  argc = out;
  argv[argc] = nullptr;

  long ps = sysconf(_SC_PAGESIZE);
  if (ps > 0) g_page = static_cast<size_t>(ps);

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  if (mpk_init(100) != 0) {
    int e = errno;
    if (e == ENOTSUP) {
      std::printf("mpk_core_bench: no protection keys: mpk_init: %s (cpuid: %s); MPK_SIMULATE=1 runs on "
                  "simulated keys\n",
                  std::strerror(e), cpu_context().c_str());
      return 77;
    }
    std::fprintf(stderr, "mpk_core_bench: mpk_init(100): %s\n", std::strerror(e));
    return 1;
  }

  const bool raw_pair = cpu_ospke();
  benchmark::AddCustomContext("cpu", cpu_context());
  benchmark::AddCustomContext("keys", simulation_requested() ? "simulated" : "hardware");
  benchmark::AddCustomContext("raw_wrpkru_pair", raw_pair ? "measured" : "not measured: no OSPKE");
  benchmark::AddCustomContext("evict_groups", std::to_string(g_evict_groups));
  benchmark::AddCustomContext("page_size", std::to_string(g_page));
  register_all(raw_pair);

  benchmark::RunSpecifiedBenchmarks();
  release();
  benchmark::Shutdown();
  return 0;
}

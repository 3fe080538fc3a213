// gate_bench.cc - what a gated call costs: gate_probe(cb) against plain_probe(cb).
//
//   mpk_gate_bench [--calls N] [--rounds R]
//
// An ordinary program linked against libmpk_gate_fixture.so, whose gate_probe and plain_probe
// are the same function (each calls its argument and returns what it returns). Under
// LD_PRELOAD=libmpk_shim.so with MPK_CONFIG=tests/sim/shim/gates.toml the shim points this
// program's slot of gate_probe at a gate stub (open the region's key, call, close it), and leaves
// plain_probe alone; natively both are plain calls. The callback does nothing but return 1.
//
// After a warm-up, each of R rounds times N calls of gate_probe(cb) and N calls of plain_probe(cb)
// (the order alternating from round to round). Under the shim the program reads the shim's live
// statistics page (/dev/shm/libmpk-PID.stats, stats_page.h) just before and just after each timed
// loop, so the PKRU writes it reports are those of the loops alone. It links nothing of libmpk.
//
// Prints one JSON object on stdout:
//   {"calls":N,"rounds":R,"gated_ns":[..],"plain_ns":[..],"gated_ns_median":..,"plain_ns_median":..,
//    "stats_page":true|false,"active":..,"backend":"..","wrpkru_gated":..,"wrpkru_plain":..,
//    "wrpkru_per_gated_call":..}
// gated_ns/plain_ns: ns per call of each round; wrpkru_*: PKRU writes counted over all rounds'
// gated (plain) loops; the counters are null without a statistics page. Exit status: 0, 1 on an
// error (a call returned a wrong value), 2 on bad arguments.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "key_backend.h"
#include "stats_page_open.h"

extern "C" {
int gate_probe(int (*probe)(void));
int plain_probe(int (*probe)(void));
}

namespace {

constexpr long kWarmup = 20000;

__attribute__((noinline)) int callback() { return 1; }

long long now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// The shim's statistics page, when this process runs under it.
const mpk::StatsPage *g_stats = nullptr;

uint64_t wrpkru_now() { return g_stats ? mpk::hot_total(g_stats->hot, mpk::Hot::wrpkru) : 0; }

// N calls; returns the sum of what they returned (N when every call reached the callback).
__attribute__((noinline)) long run_gated(long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) sum += gate_probe(callback);
  return sum;
}
__attribute__((noinline)) long run_plain(long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) sum += plain_probe(callback);
  return sum;
}

struct Loop {
  double ns_per_call;
  uint64_t wrpkru;
};

bool timed(long (*run)(long), long n, Loop *out) {
  uint64_t w0 = wrpkru_now();
  long long t0 = now_ns();
  long sum = run(n);
  long long t1 = now_ns();
  uint64_t w1 = wrpkru_now();
  out->ns_per_call = static_cast<double>(t1 - t0) / static_cast<double>(n);
  out->wrpkru = w1 - w0;
  return sum == n;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const char *backend_text(uint32_t b) {
  switch (static_cast<mpk::Backend>(b)) {
    case mpk::Backend::kHardware: return "hardware";
    case mpk::Backend::kSimulated: return "simulated";
    default: return "none";
  }
}

void print_list(const char *name, const std::vector<double> &v) {
  std::printf(",\"%s\":[", name);
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%.4f", i ? "," : "", v[i]);
  std::printf("]");
}

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: mpk_gate_bench [--calls N] [--rounds R]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
  long calls = 1000000, rounds = 11;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (!v) usage();
    if (!std::strcmp(a, "--calls")) calls = std::strtol(v, nullptr, 10);
    else if (!std::strcmp(a, "--rounds")) rounds = std::strtol(v, nullptr, 10);
    else usage();
    ++i;
  }
  if (calls < 1 || calls > 1000000000L || rounds < 1 || rounds > 1000) {
    std::fprintf(stderr, "gate_bench: --calls 1..1e9, --rounds 1..1000\n");
    return 2;
  }

  char why[256];
  g_stats = mpk::open_stats_page(getpid(), why, sizeof why);
  if (!g_stats && getenv("LD_PRELOAD")) std::fprintf(stderr, "gate_bench: %s\n", why);

  if (run_gated(kWarmup) != kWarmup || run_plain(kWarmup) != kWarmup) {
    std::fprintf(stderr, "gate_bench: a warm-up call did not return the callback's value\n");
    return 1;
  }

  std::vector<double> gated, plain;
  uint64_t wr_gated = 0, wr_plain = 0;
  for (long r = 0; r < rounds; ++r) {
    Loop g, p;
    bool ok = r % 2 == 0 ? timed(run_gated, calls, &g) && timed(run_plain, calls, &p)
                         : timed(run_plain, calls, &p) && timed(run_gated, calls, &g);
    if (!ok) {
      std::fprintf(stderr, "gate_bench: round %ld: a call did not return the callback's value\n", r);
      return 1;
    }
    gated.push_back(g.ns_per_call);
    plain.push_back(p.ns_per_call);
    wr_gated += g.wrpkru;
    wr_plain += p.wrpkru;
  }

  std::printf("{\"calls\":%ld,\"rounds\":%ld", calls, rounds);
  print_list("gated_ns", gated);
  print_list("plain_ns", plain);
  std::printf(",\"gated_ns_median\":%.4f,\"plain_ns_median\":%.4f,\"stats_page\":%s", median(gated), median(plain),
              g_stats ? "true" : "false");
  if (g_stats) {
    std::printf(",\"active\":%s,\"backend\":\"%s\",\"wrpkru_gated\":%llu,\"wrpkru_plain\":%llu,"
                "\"wrpkru_per_gated_call\":%.4f}\n",
                g_stats->active.load() ? "true" : "false", backend_text(g_stats->backend.load()),
                static_cast<unsigned long long>(wr_gated), static_cast<unsigned long long>(wr_plain),
                static_cast<double>(wr_gated) / (static_cast<double>(calls) * static_cast<double>(rounds)));
  } else {
    std::printf(",\"active\":null,\"backend\":null,\"wrpkru_gated\":null,\"wrpkru_plain\":null,"
                "\"wrpkru_per_gated_call\":null}\n");
  }
  return 0;
}

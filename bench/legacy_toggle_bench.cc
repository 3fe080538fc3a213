// legacy_toggle_bench.cc - an ordinary program's mprotect toggles, natively or under the shim.
//
//   mpk_legacy_toggle_bench --pages N [--threads T] (--seconds S | --pairs K)
//
// Each of T threads maps N pages of its own read/write, writes every page, toggles its range 8
// times untimed (under LD_PRELOAD=libmpk_shim.so a range becomes a page group on its repeated
// toggles), then, released together with the others, repeats
//     mprotect(range, READ|WRITE); one write into the range; mprotect(range, READ)
// for S seconds (every thread stops when the main thread says so) or K times. It is linked with
// nothing of libmpk: natively every call is a page-table change; under the shim the calls are
// served by PKRU updates.
//
// Under the shim the program reads the shim's live statistics page (/dev/shm/libmpk-PID.stats,
// stats_page.h) just before the threads are released and just after they have all finished, so
// the PKRU writes and emulated calls it reports are those of the timed loop alone.
//
// Prints one JSON object on stdout:
//   {"pages":N,"threads":T,"pairs":P,"wall_ns":W,"ns_per_pair":W*T/P,"toggles_per_s":2*P/W*1e9,
//    "stats_page":true|false,"active":..,"backend":"..","wrpkru":..,"legacy_calls":..,"legacy_emulated":..}
// pairs: all threads' pairs; wall_ns: from the release to the last thread's end; the counters are
// null without a statistics page. Exit status: 0, 1 on an error (a lost write included), 2 on bad
// arguments.
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "key_backend.h"
#include "stats_page_open.h"

namespace {

constexpr int kMaxThreads = 64;
constexpr int kWarmup = 8;

size_t g_page = 4096;
size_t g_pages = 0;
long g_pairs = 0;  // 0: run until g_stop
std::atomic<bool> g_stop{false};
pthread_barrier_t g_start, g_end;

struct Worker {
  pthread_t tid;
  unsigned char *range = nullptr;
  long pairs = 0;
  int error = 0;  // errno of a failed call, or -1 for a lost write
} g_workers[kMaxThreads];

long long now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline int toggle(unsigned char *range, size_t len, long i) {
  if (mprotect(range, len, PROT_READ | PROT_WRITE) != 0) return errno;
  static_cast<volatile unsigned char *>(range)[(static_cast<size_t>(i) % g_pages) * g_page] =
      static_cast<unsigned char>(i);
  if (mprotect(range, len, PROT_READ) != 0) return errno;
  return 0;
}

void *work(void *arg) {
  Worker &w = *static_cast<Worker *>(arg);
  const size_t len = g_pages * g_page;
  long i = 0;
  for (; i < kWarmup && !w.error; ++i) w.error = toggle(w.range, len, i);
  pthread_barrier_wait(&g_start);
  long done = 0;
  if (!w.error) {
    for (;; ++i) {
      if (g_pairs ? done == g_pairs : g_stop.load(std::memory_order_relaxed)) break;
      if ((w.error = toggle(w.range, len, i)) != 0) break;
      ++done;
    }
    // The range is read-only now: a read must still see what the last pair wrote.
    long last = i - 1;
    if (!w.error && w.range[(static_cast<size_t>(last) % g_pages) * g_page] != static_cast<unsigned char>(last))
      w.error = -1;
  }
  w.pairs = done;
  pthread_barrier_wait(&g_end);
  return nullptr;
}

// The shim's statistics page, when this process runs under it.
const mpk::StatsPage *g_stats = nullptr;

void open_stats_page() {
  char why[256];
  g_stats = mpk::open_stats_page(getpid(), why, sizeof why);
  if (!g_stats && getenv("LD_PRELOAD")) std::fprintf(stderr, "legacy_toggle_bench: %s\n", why);
}

struct Counts {
  uint64_t wrpkru = 0, calls = 0, emulated = 0;
};

Counts read_counts() {
  Counts c;
  if (!g_stats) return c;
  c.wrpkru = mpk::hot_total(g_stats->hot, mpk::Hot::wrpkru);
  c.calls = mpk::hot_total(g_stats->hot, mpk::Hot::legacy_calls);
  c.emulated = mpk::hot_total(g_stats->hot, mpk::Hot::legacy_emulated);
  return c;
}

const char *backend_text(uint32_t b) {
  switch (static_cast<mpk::Backend>(b)) {
    case mpk::Backend::kHardware: return "hardware";
    case mpk::Backend::kSimulated: return "simulated";
    default: return "none";
  }
}

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: mpk_legacy_toggle_bench --pages N [--threads T] (--seconds S | --pairs K)\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
  long threads = 1;
  double seconds = 0;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (!v) usage();
    if (!std::strcmp(a, "--pages")) g_pages = std::strtoul(v, nullptr, 10);
    else if (!std::strcmp(a, "--threads")) threads = std::strtol(v, nullptr, 10);
    else if (!std::strcmp(a, "--seconds")) seconds = std::strtod(v, nullptr);
    else if (!std::strcmp(a, "--pairs")) g_pairs = std::strtol(v, nullptr, 10);
    else usage();
    ++i;
  }
  if (g_pages < 1 || g_pages > (1u << 20) || threads < 1 || threads > kMaxThreads || g_pairs < 0 ||
      seconds < 0 || (g_pairs == 0) == (seconds == 0)) {
    std::fprintf(stderr, "legacy_toggle_bench: --pages 1..%u, --threads 1..%d, and one of --seconds S > 0 or "
                 "--pairs K > 0\n", 1u << 20, kMaxThreads);
    return 2;
  }
  long ps = sysconf(_SC_PAGESIZE);
  if (ps > 0) g_page = static_cast<size_t>(ps);
  const size_t len = g_pages * g_page;

  for (long t = 0; t < threads; ++t) {
    void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("legacy_toggle_bench: mmap");
      return 1;
    }
    g_workers[t].range = static_cast<unsigned char *>(p);
    for (size_t off = 0; off < len; off += g_page) g_workers[t].range[off] = 1;
  }
  open_stats_page();

  pthread_barrier_init(&g_start, nullptr, static_cast<unsigned>(threads + 1));
  pthread_barrier_init(&g_end, nullptr, static_cast<unsigned>(threads + 1));
  for (long t = 0; t < threads; ++t) {
    if (pthread_create(&g_workers[t].tid, nullptr, work, &g_workers[t]) != 0) {
      std::fprintf(stderr, "legacy_toggle_bench: pthread_create failed\n");
      return 1;
    }
  }
  // Every worker has done its warm-up toggles when it reaches the start barrier; the counters are
  // read while all of them wait there.
  Counts c0 = read_counts();
  long long t0 = now_ns();
  pthread_barrier_wait(&g_start);
  if (!g_pairs) {
    struct timespec d;
    d.tv_sec = static_cast<time_t>(seconds);
    d.tv_nsec = static_cast<long>((seconds - static_cast<double>(d.tv_sec)) * 1e9);
    while (nanosleep(&d, &d) != 0 && errno == EINTR) {
    }
    g_stop.store(true, std::memory_order_relaxed);
  }
  pthread_barrier_wait(&g_end);
  long long wall = now_ns() - t0;
  Counts c1 = read_counts();
  for (long t = 0; t < threads; ++t) pthread_join(g_workers[t].tid, nullptr);

  long pairs = 0;
  for (long t = 0; t < threads; ++t) {
    const Worker &w = g_workers[t];
    if (w.error == -1) {
      std::fprintf(stderr, "legacy_toggle_bench: thread %ld lost a write\n", t);
      return 1;
    }
    if (w.error) {
      std::fprintf(stderr, "legacy_toggle_bench: thread %ld: mprotect: %s\n", t, std::strerror(w.error));
      return 1;
    }
    pairs += w.pairs;
  }
  if (pairs == 0 || wall <= 0) {
    std::fprintf(stderr, "legacy_toggle_bench: no pair completed\n");
    return 1;
  }
  std::printf("{\"pages\":%zu,\"threads\":%ld,\"pairs\":%ld,\"wall_ns\":%lld,\"ns_per_pair\":%.3f,"
              "\"toggles_per_s\":%.1f,\"stats_page\":%s",
              g_pages, threads, pairs, wall, static_cast<double>(wall) * static_cast<double>(threads) / pairs,
              2.0 * static_cast<double>(pairs) * 1e9 / static_cast<double>(wall), g_stats ? "true" : "false");
  if (g_stats) {
    std::printf(",\"active\":%s,\"backend\":\"%s\",\"wrpkru\":%llu,\"legacy_calls\":%llu,\"legacy_emulated\":%llu}\n",
                g_stats->active.load() ? "true" : "false", backend_text(g_stats->backend.load()),
                static_cast<unsigned long long>(c1.wrpkru - c0.wrpkru),
                static_cast<unsigned long long>(c1.calls - c0.calls),
                static_cast<unsigned long long>(c1.emulated - c0.emulated));
  } else {
    std::printf(",\"active\":null,\"backend\":null,\"wrpkru\":null,\"legacy_calls\":null,\"legacy_emulated\":null}\n");
  }
  return 0;
}

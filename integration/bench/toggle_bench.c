// toggle_bench.c: the cost of an mprotect toggle pair, with other threads using the region.
//
//   mpk_toggle_bench PAGES THREADS PAIRS
//
// Maps PAGES pages read/write, starts THREADS-1 extra threads that read a byte of the region
// every ~20 µs (as a JIT's other threads run its code while one thread writes more), then
// times PAIRS pairs of mprotect(PROT_READ|PROT_WRITE) + one write + mprotect(PROT_READ).
// Natively every call is a page-table change; under libmpk_shim.so the range becomes a page
// group after its first toggles and the calls become PKRU updates. Prints one line:
//   toggle pages=N threads=T pairs=K ns_per_pair=X
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned char *region;
static size_t pages, page_size;
static atomic_int stop;
static atomic_ulong reads;

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *reader(void *arg) {
  size_t page = (size_t)(uintptr_t)arg;
  unsigned sum = 0;
  const struct timespec pause = {0, 20000};
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    sum += region[(page % pages) * page_size];  // readable in both states of the toggle
    page += 7;
    atomic_fetch_add_explicit(&reads, 1, memory_order_relaxed);
    nanosleep(&pause, NULL);
  }
  return (void *)(uintptr_t)sum;
}

static int toggle(size_t i) {
  size_t len = pages * page_size;
  if (mprotect((void *)region, len, PROT_READ | PROT_WRITE) != 0) return -1;
  region[(i % pages) * page_size] = (unsigned char)i;
  return mprotect((void *)region, len, PROT_READ);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s PAGES THREADS PAIRS\n", argv[0]);
    return 2;
  }
  pages = strtoul(argv[1], NULL, 10);
  long threads = strtol(argv[2], NULL, 10);
  long pairs = strtol(argv[3], NULL, 10);
  if (pages == 0 || threads < 1 || threads > 64 || pairs < 1) {
    fprintf(stderr, "toggle_bench: PAGES >= 1, 1 <= THREADS <= 64, PAIRS >= 1\n");
    return 2;
  }
  page_size = (size_t)sysconf(_SC_PAGESIZE);
  size_t len = pages * page_size;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("toggle_bench: mmap");
    return 1;
  }
  region = p;
  for (size_t i = 0; i < pages; i++) region[i * page_size] = 1;  // populate every page

  pthread_t tids[64];
  for (long t = 1; t < threads; t++) {
    if (pthread_create(&tids[t], NULL, reader, (void *)(uintptr_t)t) != 0) {
      fprintf(stderr, "toggle_bench: pthread_create failed\n");
      return 1;
    }
  }
  // Warm up: the shim makes a group of a range on its repeated toggles.
  for (int i = 0; i < 8; i++) {
    if (toggle((size_t)i) != 0) {
      perror("toggle_bench: mprotect");
      return 1;
    }
  }
  long long start = now_ns();
  for (long i = 0; i < pairs; i++) {
    if (toggle((size_t)i) != 0) {
      perror("toggle_bench: mprotect");
      return 1;
    }
  }
  long long elapsed = now_ns() - start;
  atomic_store(&stop, 1);
  for (long t = 1; t < threads; t++) pthread_join(tids[t], NULL);

  // The last state is read-only: a read must still see what the last pair wrote.
  size_t last = (size_t)(pairs - 1);
  if (region[(last % pages) * page_size] != (unsigned char)last) {
    fprintf(stderr, "toggle_bench: lost a write\n");
    return 1;
  }
  printf("toggle pages=%zu threads=%ld pairs=%ld ns_per_pair=%.1f\n", pages, threads, pairs,
         (double)elapsed / (double)pairs);
  return 0;
}

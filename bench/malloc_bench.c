/* malloc_bench.c - what an allocation costs: tight loops of malloc+free pairs (and calloc+free,
 * realloc growth, a ring of live blocks of mixed sizes), timed with the monotonic clock.
 *
 * An ordinary program: it links nothing of the project, so it can be run natively and under
 * LD_PRELOAD=libmpk_shim.so alike (scripts/bench-malloc does both). It is compiled with
 * -fno-builtin-malloc (and free, calloc, realloc) and passes every pointer through an empty asm
 * statement, so that no pair can be folded away or merged.
 *
 * Output, JSON lines on stdout:
 *   {"symbols": {"malloc": MODULE, "free": MODULE, ...}}   the module that defines each function as
 *                                                           this program calls it (dladdr)
 *   {"case": ID, "name": NAME, "size": N, "ns_per_op": X, "iterations": N, "chunks_ns": [...]}
 *                                                           one per case; ID is NAME/SIZE, or NAME
 *                                                           for the ring (its sizes vary)
 * ns_per_op is the median over CHUNKS timed chunks (each about SECONDS / CHUNKS long) of the time
 * per operation: one malloc+free pair, one calloc+free pair, one malloc(64)+realloc(128)+free, or
 * in the ring one free+malloc.
 *
 * Usage: mpk_malloc_bench [--seconds S] [--chunks N] [--lockstep] [--case ID]... | --list
 *   --seconds S  timed length of each case (default 0.3), after a warm-up of a tenth of that
 *   --chunks N   the timed length is cut in N chunks, their median reported (default 5)
 *   --lockstep   the warm-up and each chunk start when a byte arrives on stdin, and end with a
 *                line on stdout ({"warm": ID}, {"chunk": I, "ns_per_op": X, "iterations": N}):
 *                a runner can run the same case natively and under a preload in turn, chunk by
 *                chunk, so that a change in the machine's load falls on all of them alike
 *   --case ID    only that case (ID as --list prints it: malloc_free/64, ring_mixed); repeatable
 *   --list       print the case IDs, one a line, and run nothing
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH 1024 /* operations between two looks at the clock */
#define RING 64
#define RING_SIZES 4096
#define MAX_CHUNKS 64

/* The pointer leaves the compiler's view: the allocation is used, the pair cannot be dropped. */
#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

static double g_seconds = 0.3;
static int g_chunks = 5;
static const char *g_only[64];
static int g_nonly;
static int g_list;
static int g_lockstep;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- the cases: each runs BATCH operations --------------------------------------------------- */

typedef void (*batch_fn)(size_t size);

static void malloc_free(size_t size) {
  for (int i = 0; i < BATCH; ++i) {
    void *p = malloc(size);
    KEEP(p);
    free(p);
  }
}

static void calloc_free(size_t size) {
  for (int i = 0; i < BATCH; ++i) {
    void *p = calloc(1, size);
    KEEP(p);
    free(p);
  }
}

static void realloc_grow(size_t size) {
  for (int i = 0; i < BATCH; ++i) {
    void *p = malloc(size);
    KEEP(p);
    void *q = realloc(p, 2 * size);
    KEEP(q);
    free(q);
  }
}

/* A ring of RING live blocks: each operation frees the oldest and allocates a new one, sizes from
 * 16 to 4096 bytes, mostly small (as in real programs): 16 << k for k of 0..8, plus up to 15. */
static void *g_ring[RING];
static uint32_t g_ring_sizes[RING_SIZES];
static unsigned g_ring_pos, g_size_pos;

static void ring_init(void) {
  uint32_t x = 12345;
  for (int i = 0; i < RING_SIZES; ++i) {
    x = x * 1103515245u + 12345u;
    uint32_t r = x >> 8;
    /* k: 0..8, small ones likelier (k is the smaller of two draws). */
    uint32_t k1 = r % 9, k2 = (r / 9) % 9;
    uint32_t k = k1 < k2 ? k1 : k2;
    uint32_t size = (16u << k) + (r >> 20) % 16;
    g_ring_sizes[i] = size > 4096 ? 4096 : size;
  }
  for (int i = 0; i < RING; ++i) {
    g_ring[i] = malloc(g_ring_sizes[i]);
    KEEP(g_ring[i]);
  }
}

static void ring_fini(void) {
  for (int i = 0; i < RING; ++i) free(g_ring[i]);
}

static void ring_mixed(size_t size) {
  (void)size;
  unsigned pos = g_ring_pos, sp = g_size_pos;
  for (int i = 0; i < BATCH; ++i) {
    free(g_ring[pos]);
    void *p = malloc(g_ring_sizes[sp]);
    KEEP(p);
    g_ring[pos] = p;
    pos = (pos + 1) % RING;
    sp = (sp + 1) % RING_SIZES;
  }
  g_ring_pos = pos;
  g_size_pos = sp;
}

/* --- timing ---------------------------------------------------------------------------------- */

/* --lockstep: each step (the warm-up, then each chunk) waits for a byte on stdin, and says on
 * stdout when it is done; a runner drives several processes (natively, under a preload) in turn. */
static void wait_turn(void) {
  char b;
  if (!g_lockstep) return;
  ssize_t n;
  do n = read(0, &b, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1) {
    fprintf(stderr, "mpk_malloc_bench: --lockstep: stdin closed before the run's end\n");
    exit(3);
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void run_case(const char *name, batch_fn fn, size_t size) {
  char id[64];
  if (size) snprintf(id, sizeof id, "%s/%zu", name, size);
  else snprintf(id, sizeof id, "%s", name);
  if (g_list) {
    printf("%s\n", id);
    return;
  }
  if (g_nonly) {
    int wanted = 0;
    for (int i = 0; i < g_nonly && !wanted; ++i) wanted = !strcmp(g_only[i], id);
    if (!wanted) return;
  }
  uint64_t warm_ns = (uint64_t)(g_seconds * 1e8);
  uint64_t chunk_ns = (uint64_t)(g_seconds * 1e9 / g_chunks);
  wait_turn();
  uint64_t t0 = now_ns();
  while (now_ns() - t0 < warm_ns) fn(size);
  if (g_lockstep) {
    printf("{\"warm\": \"%s\"}\n", id);
    fflush(stdout);
  }

  double per_op[MAX_CHUNKS];
  uint64_t iterations = 0;
  for (int c = 0; c < g_chunks; ++c) {
    wait_turn();
    uint64_t n = 0, start = now_ns(), end;
    do {
      fn(size);
      n += BATCH;
      end = now_ns();
    } while (end - start < chunk_ns);
    per_op[c] = (double)(end - start) / (double)n;
    iterations += n;
    if (g_lockstep) {
      printf("{\"chunk\": %d, \"ns_per_op\": %.3f, \"iterations\": %llu}\n", c, per_op[c], (unsigned long long)n);
      fflush(stdout);
    }
  }
  double sorted[MAX_CHUNKS];
  memcpy(sorted, per_op, sizeof(double) * (size_t)g_chunks);
  qsort(sorted, (size_t)g_chunks, sizeof(double), cmp_double);
  double med = g_chunks % 2 ? sorted[g_chunks / 2] : (sorted[g_chunks / 2 - 1] + sorted[g_chunks / 2]) / 2;

  printf("{\"case\": \"%s\", \"name\": \"%s\", \"size\": %zu, \"ns_per_op\": %.3f, \"iterations\": %llu, "
         "\"chunks_ns\": [", id, name, size, med, (unsigned long long)iterations);
  for (int c = 0; c < g_chunks; ++c) printf("%s%.3f", c ? ", " : "", per_op[c]);
  printf("]}\n");
  fflush(stdout);
}

/* --- which module defines the allocator, as this program calls it ----------------------------- */

static void print_json_string(const char *s) {
  putchar('"');
  for (; *s; ++s) {
    if (*s == '"' || *s == '\\') printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20) printf("\\u%04x", (unsigned char)*s);
    else putchar(*s);
  }
  putchar('"');
}

static void print_module(const char *name, void *addr, int first) {
  Dl_info info;
  const char *module = dladdr(addr, &info) && info.dli_fname ? info.dli_fname : "?";
  printf("%s\"%s\": ", first ? "" : ", ", name);
  print_json_string(module);
}

static void print_symbols(void) {
  /* Through volatile pointers: the addresses the program's own calls go to (via its GOT). */
  void *(*volatile m)(size_t) = malloc;
  void (*volatile f)(void *) = free;
  void *(*volatile c)(size_t, size_t) = calloc;
  void *(*volatile r)(void *, size_t) = realloc;
  printf("{\"symbols\": {");
  print_module("malloc", (void *)m, 1);
  print_module("free", (void *)f, 0);
  print_module("calloc", (void *)c, 0);
  print_module("realloc", (void *)r, 0);
  printf("}}\n");
  fflush(stdout);
}

static void usage(void) {
  fprintf(stderr, "usage: mpk_malloc_bench [--seconds S] [--chunks N] [--lockstep] [--case ID]... | --list\n");
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--seconds") && i + 1 < argc) g_seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--chunks") && i + 1 < argc) g_chunks = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--case") && i + 1 < argc && g_nonly < 64) g_only[g_nonly++] = argv[++i];
    else if (!strcmp(argv[i], "--list")) g_list = 1;
    else if (!strcmp(argv[i], "--lockstep")) g_lockstep = 1;
    else usage();
  }
  if (!(g_seconds > 0) || g_chunks < 1 || g_chunks > MAX_CHUNKS) usage();

  if (!g_list) print_symbols();

  static const size_t kSizes[] = {16, 64, 256, 1024, 4096, 65536};
  for (size_t i = 0; i < sizeof kSizes / sizeof kSizes[0]; ++i) run_case("malloc_free", malloc_free, kSizes[i]);
  run_case("calloc_free", calloc_free, 64);
  run_case("calloc_free", calloc_free, 4096);
  run_case("realloc_grow", realloc_grow, 64);
  if (!g_list) ring_init();
  run_case("ring_mixed", ring_mixed, 0);
  if (!g_list) ring_fini();
  return 0;
}

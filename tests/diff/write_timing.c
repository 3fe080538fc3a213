// write_timing.c - why no preload can make every mremap answer exactly as the kernel alone would.
//
//   mpk_write_timing
//
// Two runs of the same system calls on a fresh two-page anonymous mapping whose page 1 was toggled
// R/RW a few times (never written):
//
//   mprotect(page 1, R); mprotect(page 0, R); mremap(both pages, grow to 3 pages in place)
//
// which differ only in when page 0 is first written: before the first mprotect, or between the two.
// Natively (Linux 6.1 and 6.18 measured) the first run's mremap succeeds and the second fails with
// EFAULT: a write gives the VMA holding the page a reverse map (an anon_vma); written before the
// split, both halves share it and merge again when their permissions match; written after, only
// page 0's half has one, and mprotect does not merge it into a never-written neighbour, so the
// range stays two VMAs. Under a preload that emulates the hot page's mprotect (libmpk_shim.so with
// real keys), nothing reaches the kernel between the two places page 0 may be written: the kernel
// sees the same system calls with the write between the same two of them, so its state, and any
// answer the preload can derive from it, is the same in both runs. One of them differs from
// native. Telling them apart would take a look at the pages (a system call) at every call the
// preload emulates, which is what emulation exists to avoid; and even then not everything is
// visible (a reverse map outlives its pages: MADV_DONTNEED; a read maps the zero page, no reverse
// map). See README.md in this folder, "Long mode".
//
// Prints one line per run and exits 0, 1 if a run could not be made (a demonstration, not a test:
// its answers are the kernel's).
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

enum { kWarmToggles = 8 };

// One run, in a child of its own so that neither run's mappings are the other's neighbours. Returns
// 0 if the mremap succeeded, else its errno (-1 if the child could not be run).
static int run(int write_early) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const long p = sysconf(_SC_PAGESIZE);
    // Four pages mapped, the last two unmapped again: room for the grow in place, owned by no one.
    char *m = mmap(NULL, 4 * p, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) _exit(255);
    volatile char *page0 = m;
    munmap(m + 2 * p, 2 * p);
    // Page 1 toggled first, never written: natively the halves merge again each time; a shim
    // sees a hot range and emulates the calls on it from here on (a key, no system call).
    for (int i = 0; i < kWarmToggles; ++i) {
      mprotect(m + p, p, PROT_READ);
      mprotect(m + p, p, PROT_READ | PROT_WRITE);
    }
    if (write_early) *page0 = 1;
    mprotect(m + p, p, PROT_READ);
    if (!write_early) *page0 = 1;
    mprotect(m, p, PROT_READ);
    _exit(mremap(m, 2 * p, 3 * p, 0) == MAP_FAILED ? errno : 0);
  }
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) == 255) return -1;
  return WEXITSTATUS(status);
}

static const char *answer(int e) { return e == 0 ? "ok" : e < 0 ? "could not run" : strerror(e); }

int main(int argc, char **argv) {
  if (argc > 1) {
    int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
    fprintf(help ? stdout : stderr, "usage: %s (no arguments; see write_timing.c)\n", argv[0]);
    return help ? 0 : 2;
  }
  int early = run(1), late = run(0);
  printf("page 0 first written before the first mprotect: mremap %s\n", answer(early));
  printf("page 0 first written between the two mprotects: mremap %s\n", answer(late));
  printf("same system calls, %s answers\n", early != late ? "different" : "the same");
  return early < 0 || late < 0;
}

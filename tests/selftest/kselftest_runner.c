/* kselftest_runner: runs the kernel's pkey selftest (protection_keys_64) and judges it.
 *
 *   mpk_kselftest_runner [--preload LIB] [--require-pkeys] [--env NAME=VAL] [--timeout S] [--quiet] [--] BINARY
 *
 * The selftest cannot be judged by its exit status: test_pkey_alloc_exhaust calls fork() and the
 * parent exits 0, once per iteration, so the remaining tests run in a descendant whose status
 * nobody waits for. This runner makes itself a child subreaper (every orphaned descendant is
 * reparented to it), runs BINARY in its own process group with stdout and stderr on a pipe,
 * streams that output, and waits for every descendant. It passes when every process exited 0,
 * the output says "done (all tests OK)", and every test number passed in every iteration
 * (the set of "test N PASSED (iteration I)" lines: a fork copies stdio's unwritten buffer, so
 * lines may be printed twice).
 *
 * --preload LIB   run BINARY with LD_PRELOAD=LIB (only BINARY: the runner itself stays plain);
 *                 MPK_STATS is set too, and the run fails unless a process reported the shim
 *                 active on hardware keys (or the selftest found no pkeys, below).
 * --require-pkeys a selftest that finds no protection keys ("has pkeys: 0") fails the run;
 *                 without it that is a skip (exit 77) with the reason.
 * --env NAME=VAL  also set NAME=VAL for BINARY (up to 8 times), e.g. MPK_SECCOMP=1.
 * --timeout S     kill every descendant and fail after S seconds (default 600).
 *
 * As root the selftest sets /proc/sys/vm/nr_hugepages to 10 (setup_hugetlbfs); the runner puts
 * back the value it found. Exit status: 0 pass, 1 fail, 77 skip, 2 usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 64
#define MAX_ITER 64

static const char *const kTestNames[] = {
    /* pkey_tests[] in tools/testing/selftests/vm/protection_keys.c (Linux 6.1), x86_64 */
    "test_read_of_write_disabled_region",
    "test_read_of_access_disabled_region",
    "test_read_of_access_disabled_region_with_page_already_mapped",
    "test_write_of_write_disabled_region",
    "test_write_of_write_disabled_region_with_page_already_mapped",
    "test_write_of_access_disabled_region",
    "test_write_of_access_disabled_region_with_page_already_mapped",
    "test_kernel_write_of_access_disabled_region",
    "test_kernel_write_of_write_disabled_region",
    "test_kernel_gup_of_access_disabled_region",
    "test_kernel_gup_write_to_write_disabled_region",
    "test_executing_on_unreadable_memory",
    "test_implicit_mprotect_exec_only_memory",
    "test_mprotect_with_pkey_0",
    "test_ptrace_of_child",
    "test_pkey_init_state",
    "test_pkey_syscalls_on_non_allocated_pkey",
    "test_pkey_syscalls_bad_args",
    "test_pkey_alloc_exhaust",
    "test_pkey_alloc_free_attach_pkey0",
    "test_ptrace_modifies_pkru",
};
#define NAMED_TESTS (int)(sizeof kTestNames / sizeof kTestNames[0])

static char *out_buf;
static size_t out_len, out_cap;
static char line_buf[4096];
static size_t line_len;
static unsigned char passed[MAX_TESTS][MAX_ITER];
static int max_test = -1, max_iter = 0;
static int saw_done, saw_no_pkeys, saw_assert;
static int quiet;

static void note_line(const char *l) {
  int t, it;
  if (sscanf(l, "test %d PASSED (iteration %d)", &t, &it) == 2 && t >= 0 && t < MAX_TESTS && it > 0 && it < MAX_ITER) {
    passed[t][it] = 1;
    if (t > max_test) max_test = t;
    if (it > max_iter) max_iter = it;
  }
  if (strstr(l, "done (all tests OK)")) saw_done = 1;
  if (strstr(l, "has pkeys: 0")) saw_no_pkeys = 1;
  if (strstr(l, "assert() at")) saw_assert = 1;
}

static void take_output(const char *p, size_t n) {
  if (!quiet) fwrite(p, 1, n, stdout), fflush(stdout);
  if (out_len + n + 1 > out_cap) {
    out_cap = (out_len + n + 1) * 2;
    out_buf = realloc(out_buf, out_cap);
    if (!out_buf) abort();
  }
  memcpy(out_buf + out_len, p, n);
  out_len += n;
  for (size_t i = 0; i < n; ++i) {
    if (p[i] == '\n' || line_len == sizeof line_buf - 1) {
      line_buf[line_len] = '\0';
      note_line(line_buf);
      line_len = 0;
      if (p[i] == '\n') continue;
    }
    line_buf[line_len++] = p[i];
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int read_hugepages(void) {
  int fd = open("/proc/sys/vm/nr_hugepages", O_RDONLY);
  if (fd < 0) return -1;
  char b[32];
  ssize_t n = read(fd, b, sizeof b - 1);
  close(fd);
  if (n <= 0) return -1;
  b[n] = '\0';
  return atoi(b);
}

static void write_hugepages(int v) {
  int fd = open("/proc/sys/vm/nr_hugepages", O_WRONLY);
  if (fd < 0) return;
  char b[32];
  int n = snprintf(b, sizeof b, "%d", v);
  if (write(fd, b, n) != n) perror("kselftest_runner: restoring /proc/sys/vm/nr_hugepages");
  close(fd);
}

/* Files the shim wrote for MPK_STATS=<prefix>%p.json: does one say it ran on hardware keys? */
static int shim_reports(const char *dir, const char *base, int *active) {
  DIR *d = opendir(dir);
  int files = 0;
  *active = 0;
  if (!d) return 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, base, strlen(base)) != 0) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "r");
    if (f) {
      char buf[8192];
      size_t n = fread(buf, 1, sizeof buf - 1, f);
      buf[n] = '\0';
      fclose(f);
      ++files;
      if (strstr(buf, "\"active\":true") && strstr(buf, "\"backend\":\"hardware\"")) *active = 1;
    }
    unlink(path);
  }
  closedir(d);
  return files;
}

static void usage(void) {
  fprintf(stderr, "usage: mpk_kselftest_runner [--preload LIB] [--require-pkeys] [--env NAME=VAL] [--timeout S] [--quiet] [--] BINARY\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *preload = NULL;
  int require_pkeys = 0, timeout_s = 600, i, nenv = 0;
  char *envs[8];
  for (i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--preload") && i + 1 < argc) preload = argv[++i];
    else if (!strcmp(argv[i], "--require-pkeys")) require_pkeys = 1;
    else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--quiet")) quiet = 1;
    else if (!strcmp(argv[i], "--env") && i + 1 < argc && strchr(argv[i + 1], '=') && nenv < 8) envs[nenv++] = argv[++i];
    else if (!strcmp(argv[i], "--")) { ++i; break; }
    else if (argv[i][0] != '-') break;  /* BINARY ("--" is optional: scripts/qemu-run splits commands at it) */
    else usage();
  }
  if (i >= argc || timeout_s <= 0) usage();
  char **cmd = argv + i;
  if (preload && access(preload, R_OK) != 0) {
    fprintf(stderr, "kselftest_runner: --preload %s: %s\n", preload, strerror(errno));
    return 1;
  }

  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    perror("kselftest_runner: PR_SET_CHILD_SUBREAPER");
    return 1;
  }
  int hugepages = geteuid() == 0 ? read_hugepages() : -1;

  char stats_dir[] = "/tmp";
  char stats_base[64], stats_env[256];
  snprintf(stats_base, sizeof stats_base, "mpk-kselftest-%d-", (int)getpid());
  snprintf(stats_env, sizeof stats_env, "%s/%s%%p.json", stats_dir, stats_base);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    perror("kselftest_runner: pipe");
    return 1;
  }
  double start = now();
  pid_t child = fork();
  if (child < 0) {
    perror("kselftest_runner: fork");
    return 1;
  }
  if (child == 0) {
    setpgid(0, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    for (int e = 0; e < nenv; ++e) putenv(envs[e]);
    if (preload) {
      setenv("LD_PRELOAD", preload, 1);
      setenv("MPK_STATS", stats_env, 1);
    }
    execv(cmd[0], cmd);
    fprintf(stderr, "kselftest_runner: cannot run %s: %s\n", cmd[0], strerror(errno));
    _exit(127);
  }
  setpgid(child, child);
  close(fds[1]);

  int failures = 0, procs = 0, open_pipe = 1, timed_out = 0;
  for (;;) {
    /* Reap whatever has ended: the child, and every orphaned descendant. */
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
      ++procs;
      if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;
      ++failures;
      if (WIFEXITED(st))
        fprintf(stderr, "kselftest_runner: process %d exited with status %d\n", (int)p, WEXITSTATUS(st));
      else
        fprintf(stderr, "kselftest_runner: process %d was killed by signal %d (%s)\n", (int)p, WTERMSIG(st),
                strsignal(WTERMSIG(st)));
    }
    if (p < 0 && errno == ECHILD && !open_pipe) break;
    if (failures) {
      /* A failed test leaves others behind (a sleeping ptrace child): end them all. */
      kill(-child, SIGKILL);
    }
    if (now() - start > timeout_s) {
      if (!timed_out) fprintf(stderr, "kselftest_runner: TIMEOUT after %d s: killing the selftest\n", timeout_s);
      timed_out = 1;
      kill(-child, SIGKILL);
    }
    if (open_pipe) {
      struct pollfd pf = {fds[0], POLLIN, 0};
      if (poll(&pf, 1, 100) > 0) {
        char buf[65536];
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n > 0) take_output(buf, (size_t)n);
        else if (n == 0 || errno != EINTR) open_pipe = 0;
      }
    } else {
      usleep(20000);
    }
  }
  if (line_len) {
    line_buf[line_len] = '\0';
    note_line(line_buf);
  }
  double secs = now() - start;
  if (hugepages >= 0 && read_hugepages() != hugepages) write_hugepages(hugepages);

  int shim_active = 0, shim_files = 0;
  if (preload) shim_files = shim_reports(stats_dir, stats_base, &shim_active);

  printf("\nkselftest_runner: %d process(es), %.1f s%s%s", procs, secs, preload ? ", LD_PRELOAD=" : "",
         preload ? preload : "");
  for (int e = 0; e < nenv; ++e) printf(" %s", envs[e]);
  printf("\n");
  if (saw_no_pkeys && !failures && !timed_out) {
    if (require_pkeys) {
      printf("kselftest_runner: FAIL: the selftest found no protection keys (\"has pkeys: 0\") where they are required\n");
      return 1;
    }
    printf("kselftest_runner: SKIP: this CPU or kernel has no protection keys: the selftest printed \"has pkeys: 0\" "
           "and ran only its unsupported-CPU check (test_mprotect_pkey_on_unsupported_cpu)\n");
    return 77;
  }
  int ok = !failures && !timed_out && saw_done && !saw_assert && max_test >= 0;
  int missing = 0;
  for (int t = 0; t <= max_test; ++t)
    for (int it = 1; it <= max_iter; ++it)
      if (!passed[t][it]) {
        if (missing++ < 10) printf("kselftest_runner: test %d did not pass in iteration %d\n", t, it);
      }
  if (missing) ok = 0;
  if (preload && !shim_active) {
    printf("kselftest_runner: FAIL: no process reported the shim active on hardware keys (%d statistics file(s))\n",
           shim_files);
    ok = 0;
  }
  if (max_test >= 0) {
    printf("kselftest_runner: tests 0..%d, iterations 1..%d:\n", max_test, max_iter);
    for (int t = 0; t <= max_test; ++t) {
      int n = 0;
      for (int it = 1; it <= max_iter; ++it) n += passed[t][it];
      printf("  %2d %-62s passed %d/%d\n", t, t < NAMED_TESTS ? kTestNames[t] : "?", n, max_iter);
    }
  }
  if (!ok) {
    printf("kselftest_runner: FAIL (%d process(es) failed%s%s%s)\n", failures, timed_out ? ", timed out" : "",
           saw_done ? "" : ", no \"done (all tests OK)\"", saw_assert ? ", an assertion failed" : "");
    return 1;
  }
  printf("kselftest_runner: PASS: all %d tests x %d iterations%s\n", max_test + 1, max_iter,
         preload ? " under the shim (active, hardware keys)" : "");
  return 0;
}

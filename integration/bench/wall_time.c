// wall_time.c: run a command and print its wall-clock time.
//
//   mpk_wall_time CMD [ARGS...]
//
// Prints "wall_ns=<nanoseconds> status=<exit status>" on stderr after the command ends and
// exits with the command's status (128+N when a signal N ended it, 127 when it cannot be
// started). scripts/bench-apps times each run with it.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CMD [ARGS...]\n", argv[0]);
    return 2;
  }
  long long start = now_ns();
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "mpk_wall_time: fork: %s\n", strerror(errno));
    return 127;
  }
  if (pid == 0) {
    execvp(argv[1], argv + 1);
    fprintf(stderr, "mpk_wall_time: %s: %s\n", argv[1], strerror(errno));
    _exit(127);
  }
  int wstatus;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) {
      fprintf(stderr, "mpk_wall_time: waitpid: %s\n", strerror(errno));
      return 127;
    }
  }
  long long elapsed = now_ns() - start;
  int status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  fprintf(stderr, "wall_ns=%lld status=%d\n", elapsed, status);
  return status;
}

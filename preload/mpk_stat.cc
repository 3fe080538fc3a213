// mpk-stat: prints the live statistics of a process running under the shim.
//
// Usage: mpk-stat PID   (or mpk-stat --help). Reads /dev/shm/libmpk-PID.stats, the page the shim
// publishes (core/src/stats_page.h), and prints the same JSON object MPK_STATS gets at exit.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "stats_page_open.h"

namespace {

void usage(FILE *out) {
  std::fprintf(out,
               "Usage: mpk-stat PID\n"
               "Print the live statistics of process PID running under libmpk_shim.so, as one JSON\n"
               "object (the same fields MPK_STATS gets at exit). Exit status: 0 printed, 1 no such\n"
               "process or it does not run under the shim, 2 bad usage.\n");
}

}  // namespace

int main(int argc, char **argv) {
  if (argc == 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    usage(stdout);
    return 0;
  }
  char *end = nullptr;
  long pid = argc == 2 ? std::strtol(argv[1], &end, 10) : 0;
  if (argc != 2 || !end || *end || pid <= 0) {
    usage(stderr);
    return 2;
  }
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
    std::fprintf(stderr, "mpk-stat: no process %ld\n", pid);
    return 1;
  }
  char why[256];
  const mpk::StatsPage *page = mpk::open_stats_page(pid, why, sizeof why);
  if (!page) {
    std::fprintf(stderr, "mpk-stat: %s\n", why);
    return 1;
  }
  static char buf[1 << 16];
  int n = mpk::stats_page_json(*page, buf, sizeof buf, nullptr);
  std::fwrite(buf, 1, static_cast<size_t>(n), stdout);
  std::fputc('\n', stdout);
  return 0;
}

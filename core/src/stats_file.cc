#include "stats_file.h"

#include <fcntl.h>

#include <cstdlib>
#include <cstring>

#include "raw_log.h"
#include "sys.h"

namespace mpk {

namespace {
constinit char g_stats_path[512];
}  // namespace

void stats_file_remember() {
  const char *path = getenv("MPK_STATS");
  if (!path || std::strlen(path) >= sizeof g_stats_path) {
    if (path) MPK_LOG(kWarn, "MPK_STATS: path longer than %zu bytes; no statistics file", sizeof g_stats_path - 1);
    return;
  }
  std::memcpy(g_stats_path, path, std::strlen(path) + 1);
}

void stats_file_write(int (*render)(char *buf, int cap)) {
  const char *path = g_stats_path;
  if (!*path) return;
  char real_path[512];
  int n = 0;
  for (const char *p = path; *p && n < (int)sizeof real_path - 16; ++p) {
    if (p[0] == '%' && p[1] == 'p') {
      n += format_to(real_path + n, sizeof real_path - n, "%d", sys::getpid());
      ++p;
    } else {
      real_path[n++] = *p;
    }
  }
  real_path[n] = '\0';
  static char buf[1 << 16];
  int len = render(buf, sizeof buf - 1);
  buf[len++] = '\n';
  int fd = static_cast<int>(sys::raw(SYS_openat, AT_FDCWD, (long)real_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd < 0) {
    MPK_LOG(kWarn, "MPK_STATS: cannot write %s (errno %d)", real_path, -fd);
    return;
  }
  for (int off = 0; off < len;) {
    long w = sys::write(fd, buf + off, len - off);
    if (w <= 0) break;
    off += static_cast<int>(w);
  }
  sys::close(fd);
}

}  // namespace mpk

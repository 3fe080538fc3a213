#include "exe_name.h"

#include <fcntl.h>

#include <cstring>

#include "sys.h"

namespace mpk::shim {

namespace {
char g_exe_name[256];
bool g_read = false;
}  // namespace

const char *basename_of(const char *path) {
  const char *slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

const char *exe_name() {
  if (g_read) return g_exe_name;
  char buf[4096];
  long n = sys::raw(SYS_readlinkat, AT_FDCWD, (long)"/proc/self/exe", (long)buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = '\0';
    const char *b = basename_of(buf);
    size_t len = std::strlen(b);
    if (len >= sizeof g_exe_name) len = sizeof g_exe_name - 1;
    std::memcpy(g_exe_name, b, len);
    g_exe_name[len] = '\0';
  }
  g_read = true;  // start-up and dlopen only (under their own locks): no race worth an atomic
  return g_exe_name;
}

}  // namespace mpk::shim

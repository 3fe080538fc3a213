#include "raw_log.h"

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdint>

#include "sys.h"

namespace mpk {

namespace {
constinit std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};
constinit std::atomic<int> g_fd{2};

struct Out {
  char *buf;
  int cap;
  int len = 0;
  void put(char c) {
    if (len + 1 < cap) buf[len++] = c;
  }
  void str(const char *s) {
    if (!s) s = "(null)";
    while (*s) put(*s++);
  }
  void num(unsigned long v, unsigned base, bool neg, int min_digits = 1) {
    char tmp[24];
    int n = 0;
    do {
      tmp[n++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v);
    while (n < min_digits) tmp[n++] = '0';
    if (neg) put('-');
    while (n) put(tmp[--n]);
  }
};

int vformat(char *buf, int cap, const char *fmt, va_list ap) {
  Out o{buf, cap};
  for (const char *p = fmt; *p; ++p) {
    if (*p != '%') {
      o.put(*p);
      continue;
    }
    ++p;
    bool is_long = false;
    if (*p == 'l' || *p == 'z') {
      is_long = true;
      ++p;
    }
    switch (*p) {
      case 's': o.str(va_arg(ap, const char *)); break;
      case 'd': {
        long v = is_long ? va_arg(ap, long) : va_arg(ap, int);
        o.num(v < 0 ? 0ul - (unsigned long)v : (unsigned long)v, 10, v < 0);
        break;
      }
      case 'u': o.num(is_long ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 10, false); break;
      case 'x': o.num(is_long ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 16, false); break;
      case 'p':
        o.str("0x");
        o.num(reinterpret_cast<uintptr_t>(va_arg(ap, void *)), 16, false);
        break;
      case '%': o.put('%'); break;
      case '\0': --p; break;
      default: o.put('%'); o.put(*p); break;
    }
  }
  if (cap > 0) buf[o.len] = '\0';
  return o.len;
}
}  // namespace

void log_configure(LogLevel level, int fd) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
  if (fd >= 0) g_fd.store(fd, std::memory_order_relaxed);
}

void log_write(const char *buf, int n) { sys::write(g_fd.load(std::memory_order_relaxed), buf, n); }

LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

int format_to(char *buf, int cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vformat(buf, cap, fmt, ap);
  va_end(ap);
  return n;
}

void raw_log(LogLevel level, const char *fmt, ...) {
  int saved = errno;
  static const char *const names[] = {"error", "warn", "info", "debug"};
  char buf[512];
  int n = format_to(buf, sizeof buf, "mpk: %s: ", names[static_cast<int>(level)]);
  va_list ap;
  va_start(ap, fmt);
  n += vformat(buf + n, (int)sizeof buf - n - 1, fmt, ap);
  va_end(ap);
  buf[n++] = '\n';
  sys::write(g_fd.load(std::memory_order_relaxed), buf, n);
  errno = saved;
}

}  // namespace mpk

// raw_log.h - the engine's logger: a fixed buffer and one write(2), prefix "mpk:".
//
// Usable in signal handlers and on interposed paths: it never allocates, never locks and saves
// errno. Formats: %s %d %u %ld %lu %zu %x %lx %p %%. Level from MPK_LOG (error, warn, info, debug;
// default warn), destination stderr or MPK_LOG_FILE (opened once at init, as path.<pid>).
#pragma once

namespace mpk {

enum class LogLevel : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

// Sets the level and, when fd >= 0, the destination.
void log_configure(LogLevel level, int fd);
LogLevel log_level();
// Writes a preformatted record (e.g. a JSON line) to the log's destination.
void log_write(const char *buf, int n);
void raw_log(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Formats into buf (always NUL-terminated); returns the length. Async-signal-safe.
int format_to(char *buf, int cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

}  // namespace mpk

#define MPK_LOG(level, ...)                                                  \
  do {                                                                       \
    if (static_cast<int>(::mpk::LogLevel::level) <= static_cast<int>(::mpk::log_level())) \
      ::mpk::raw_log(::mpk::LogLevel::level, __VA_ARGS__);                   \
  } while (0)

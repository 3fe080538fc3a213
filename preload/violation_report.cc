#include "violation_report.h"

#define UNW_LOCAL_ONLY
#include <dlfcn.h>
#include <fcntl.h>
#include <libunwind.h>
#include <sys/ucontext.h>
#include <time.h>

#include <atomic>
#include <cstring>

#include "engine_state.h"
#include "policy_hooks.h"
#include "raw_log.h"
#include "sys.h"

namespace mpk::shim {

namespace {

constexpr int kSites = 1024;
constinit std::atomic<uintptr_t> g_sites[kSites] = {};
constexpr int kFrames = 16;

// Appends s to out as JSON string contents.
int json_escape(char *out, int cap, const char *s) {
  int n = 0;
  for (; s && *s && n < cap - 7; ++s) {
    unsigned char c = static_cast<unsigned char>(*s);
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = static_cast<char>(c);
    } else if (c < 0x20) {
      n += format_to(out + n, cap - n, "\\u%x%x%x%x", 0, 0, c >> 4, c & 15);
    } else {
      out[n++] = static_cast<char>(c);
    }
  }
  out[n] = '\0';
  return n;
}

void thread_name(char *name) {
  name[0] = '\0';
  int fd = sys::open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  long n = sys::read(fd, name, 15);
  sys::close(fd);
  if (n <= 0) return;
  name[n] = '\0';
  if (char *nl = std::strchr(name, '\n')) *nl = '\0';
}

// libunwind, loaded privately (config/caller.h says why it is never linked): only the functions
// that walk frames from a signal context. Symbols come from dladdr, which touches no file.
struct Unwinder {
  int (*init_local2)(unw_cursor_t *, unw_context_t *, int) = nullptr;
  int (*step)(unw_cursor_t *) = nullptr;
  int (*get_reg)(unw_cursor_t *, unw_regnum_t, unw_word_t *) = nullptr;
};
constinit Unwinder g_unw;

// One frame as "symbol+0xOFF (module)" when the dynamic symbol table names it, else
// "module+0xOFF" (for addr2line), else the bare address.
void describe_frame(uintptr_t ip, char *out, int cap) {
  Dl_info info;
  if (!dladdr(reinterpret_cast<void *>(ip), &info) || !info.dli_fname) {
    format_to(out, cap, "0x%lx", (unsigned long)ip);
    return;
  }
  const char *slash = std::strrchr(info.dli_fname, '/');
  const char *module = slash ? slash + 1 : info.dli_fname;
  if (info.dli_sname && info.dli_saddr)
    format_to(out, cap, "%s+0x%lx (%s)", info.dli_sname,
              (unsigned long)(ip - reinterpret_cast<uintptr_t>(info.dli_saddr)), module);
  else
    format_to(out, cap, "%s+0x%lx", module, (unsigned long)(ip - reinterpret_cast<uintptr_t>(info.dli_fbase)));
}

// The backtrace from the faulting context as a JSON array of strings.
int backtrace_json(void *uctx, char *out, int cap) {
  int n = format_to(out, cap, "[");
  auto *uc = static_cast<ucontext_t *>(uctx);
  char frame[512], esc[560];
  unw_cursor_t cursor;
  if (!g_unw.init_local2 ||
      g_unw.init_local2(&cursor, reinterpret_cast<unw_context_t *>(uctx), UNW_INIT_SIGNAL_FRAME) != 0) {
    describe_frame(static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]), frame, sizeof frame);
    json_escape(esc, sizeof esc, frame);
    return n + format_to(out + n, cap - n, "\"%s\"]", esc);
  }
  for (int i = 0; i < kFrames && n < cap - 600; ++i) {
    unw_word_t ip = 0;
    g_unw.get_reg(&cursor, UNW_REG_IP, &ip);
    describe_frame(static_cast<uintptr_t>(ip), frame, sizeof frame);
    json_escape(esc, sizeof esc, frame);
    n += format_to(out + n, cap - n, "%s\"%s\"", i ? "," : "", esc);
    if (g_unw.step(&cursor) <= 0) break;
  }
  return n + format_to(out + n, cap - n, "]");
}

}  // namespace

void unwinder_init() {
  void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    MPK_LOG(kInfo, "libunwind.so.8 not found: violation reports carry only the faulting address");
    return;
  }
  Unwinder u;
  u.init_local2 = reinterpret_cast<decltype(u.init_local2)>(dlsym(h, "_ULx86_64_init_local2"));
  u.step = reinterpret_cast<decltype(u.step)>(dlsym(h, "_ULx86_64_step"));
  u.get_reg = reinterpret_cast<decltype(u.get_reg)>(dlsym(h, "_ULx86_64_get_reg"));
  if (u.init_local2 && u.step && u.get_reg) g_unw = u;
}

uint64_t thread_key() {
  char name[16];
  thread_name(name);
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (const char *p = name; *p; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 1099511628211ull;
  return h;
}

bool first_at_site(uintptr_t ip, uint64_t who, bool write) {
  uintptr_t key = (ip ^ who * 0x9E3779B97F4A7C15ull ^ (write ? 0x5bd1e995u : 0)) | 1;  // never 0 (free)
  size_t h = (key * 0x9E3779B97F4A7C15ull) >> 54;
  for (int i = 0; i < kSites; ++i) {
    std::atomic<uintptr_t> &slot = g_sites[(h + i) % kSites];
    uintptr_t cur = slot.load(std::memory_order_acquire);
    if (cur == key) return false;
    if (cur == 0) {
      if (slot.compare_exchange_strong(cur, key, std::memory_order_acq_rel)) return true;
      if (cur == key) return false;
    }
  }
  return true;  // table full: report rather than stay silent
}

void report_violation(const IsolationFault &f, siginfo_t *si, void *uctx) {
  auto *uc = static_cast<ucontext_t *>(uctx);
  auto addr = reinterpret_cast<uintptr_t>(si->si_addr);
  bool write = (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
  const char *region = region_name(f.region);
  char name[16], ename[40], eregion[140];
  thread_name(name);
  json_escape(ename, sizeof ename, name);
  json_escape(eregion, sizeof eregion, region ? region : "?");
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  char when[32];
  unsigned long usec = static_cast<unsigned long>(ts.tv_nsec / 1000);
  int w = format_to(when, sizeof when, "%ld.", (long)ts.tv_sec);
  for (unsigned long div = 100000; div; div /= 10) when[w++] = static_cast<char>('0' + usec / div % 10);
  when[w] = '\0';
  static char line[8192];  // one report at a time per process is enough: reports are rare
  static std::atomic_flag busy = ATOMIC_FLAG_INIT;
  while (busy.test_and_set(std::memory_order_acquire)) sys::sched_yield();
  int n = format_to(line, sizeof line,
                    "{\"event\":\"violation\",\"time\":%s,\"pid\":%d,\"tid\":%d,\"thread\":\"%s\","
                    "\"region\":\"%s\",\"address\":\"0x%lx\",\"offset\":%lu,\"access\":\"%s\",\"mode\":\"%s\","
                    "\"backtrace\":",
                    when, sys::getpid(),
                    sys::gettid(), ename, eregion, (unsigned long)addr, (unsigned long)(addr - f.start),
                    write ? "write" : "read", f.audit ? "audit" : "enforce");
  n += backtrace_json(uctx, line + n, (int)sizeof line - n - 4);
  n += format_to(line + n, (int)sizeof line - n, "}\n");
  log_write(line, n);
  char human[512];
  int h = format_to(human, sizeof human,
                    "mpk: violation: thread %d '%s' %s region '%s' at 0x%lx (offset %lu)%s\n", sys::gettid(),
                    name, write ? "wrote to" : "read from", region ? region : "?", (unsigned long)addr,
                    (unsigned long)(addr - f.start),
                    f.audit ? "; audit mode: allowed, logged once per access site" : "; enforce mode: stopping the program");
  sys::write(2, human, h);
  busy.clear(std::memory_order_release);
}

}  // namespace mpk::shim

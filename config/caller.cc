// caller.cc - call-stack criteria with libunwind (local unwinding only) and dladdr.
#define UNW_LOCAL_ONLY
#include "caller.h"

#include <dlfcn.h>
#include <libunwind.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "policy.h"

namespace mpk::cfg {
namespace {

constexpr size_t kSymbolBuf = 1024;
constexpr char kLibunwind[] = "libunwind.so.8";

#define MPK_STR2(x) #x
#define MPK_STR(x) MPK_STR2(x)

// The libunwind functions used here, resolved from a library loaded with RTLD_LOCAL (see
// caller.h for why it is not linked). The header's macros give the real symbol names.
struct Unwind {
  decltype(&unw_tdep_getcontext) getcontext;
  decltype(&unw_init_local) init_local;
  decltype(&unw_init_local2) init_local2;
  decltype(&unw_step) step;
  decltype(&unw_get_reg) get_reg;
  decltype(&unw_get_proc_name) get_proc_name;
  decltype(&unw_get_proc_info) get_proc_info;
  decltype(&unw_is_signal_frame) is_signal_frame;
};

constinit Unwind g_unw{};
// Set after every g_unw field is written; readers check it with acquire before using g_unw.
constinit std::atomic<bool> g_unw_ready{false};

const char *basename_of(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

bool parse_hex(const char *s, uint64_t *out) {
  if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X') || !s[2]) return false;
  uint64_t v = 0;
  for (const char *p = s + 2; *p; ++p) {
    int d;
    if (*p >= '0' && *p <= '9') d = *p - '0';
    else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
    else if (*p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
    else return false;
    if (v >> 60) return false;  // more than 64 bits
    v = v << 4 | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

// One frame against the pattern. `lookup_ip` is the address to attribute the frame to: the
// return address minus one for a caller's frame, so a call that ends its function is not
// attributed to the next function.
bool frame_matches(const CallerPattern &p, unw_cursor_t *cursor, uintptr_t ip, uintptr_t lookup_ip,
                   uintptr_t skip_base) {
  Dl_info info;
  bool have_module = dladdr(reinterpret_cast<void *>(lookup_ip), &info) != 0 && info.dli_fname;
  uintptr_t base = have_module ? reinterpret_cast<uintptr_t>(info.dli_fbase) : 0;
  if (skip_base && base == skip_base) return false;

  if (p.kind == CallerKind::kSymbol) {
    char name[kSymbolBuf];
    unw_word_t off = 0;
    // A truncated name (-UNW_ENOMEM) could match a glob it should not: treat it as no name.
    if (g_unw.get_proc_name(cursor, name, sizeof name, &off) != 0) return false;
    return glob_match(p.glob, name, false);
  }

  if (!have_module || !glob_match(p.glob, basename_of(info.dli_fname), false)) return false;
  if (p.kind == CallerKind::kModuleAny) return true;
  if (ip - base == p.offset) return true;  // the return address itself
  unw_proc_info_t pi;
  if (g_unw.get_proc_info(cursor, &pi) == 0 && pi.start_ip != 0 &&
      static_cast<uintptr_t>(pi.start_ip) - base == p.offset)
    return true;  // the start of the function the frame is in
  return false;
}

}  // namespace

bool parse_caller_pattern(const char *text, CallerPattern *out, const char **why) {
  *out = CallerPattern{};
  size_t len = strlen(text);
  if (len == 0) { *why = "an empty pattern matches nothing"; return false; }
  if (len > kCallerPatternMax) { *why = "longer than 255 characters"; return false; }
  const char *plus = strrchr(text, '+');
  if (!plus) {
    out->kind = CallerKind::kSymbol;
    memcpy(out->glob, text, len + 1);
    return true;
  }
  size_t module_len = static_cast<size_t>(plus - text);
  if (module_len == 0) { *why = "no module name before '+'"; return false; }
  if (memchr(text, '+', module_len)) { *why = "more than one '+'"; return false; }
  const char *rest = plus + 1;
  if (strcmp(rest, "*") == 0) {
    out->kind = CallerKind::kModuleAny;
  } else if (parse_hex(rest, &out->offset)) {
    out->kind = CallerKind::kModuleOffset;
  } else {
    *why = "after '+' expected a hex offset like 0x1a2b0, or '*' for anywhere in the module";
    return false;
  }
  if (memchr(text, '/', module_len)) {
    *why = "the module is matched by its file's basename: leave out the directory";
    return false;
  }
  memcpy(out->glob, text, module_len);
  out->glob[module_len] = 0;
  return true;
}

bool caller_init(char *err, size_t err_len) {
  if (g_unw_ready.load(std::memory_order_acquire)) return true;
  void *lib = dlopen(kLibunwind, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    if (err_len) snprintf(err, err_len, "cannot load %s: %s", kLibunwind, why ? why : "unknown error");
    return false;
  }
  Unwind u{};
  bool ok = true;
  auto resolve = [&](auto *slot, const char *name) {
    *slot = reinterpret_cast<std::remove_reference_t<decltype(*slot)>>(dlsym(lib, name));
    if (!*slot) {
      if (ok && err_len) snprintf(err, err_len, "%s has no symbol %s", kLibunwind, name);
      ok = false;
    }
  };
  resolve(&u.getcontext, MPK_STR(unw_tdep_getcontext));
  resolve(&u.init_local, MPK_STR(unw_init_local));
  resolve(&u.init_local2, MPK_STR(unw_init_local2));
  resolve(&u.step, MPK_STR(unw_step));
  resolve(&u.get_reg, MPK_STR(unw_get_reg));
  resolve(&u.get_proc_name, MPK_STR(unw_get_proc_name));
  resolve(&u.get_proc_info, MPK_STR(unw_get_proc_info));
  resolve(&u.is_signal_frame, MPK_STR(unw_is_signal_frame));
  if (!ok) return false;  // the library stays loaded: dlclose is not worth the risk here
  g_unw = u;
  g_unw_ready.store(true, std::memory_order_release);
  return true;
}

bool caller_ready() { return g_unw_ready.load(std::memory_order_acquire); }

bool caller_matches(const CallerPattern &pattern, uintptr_t skip_module_base) {
  if (!caller_ready()) return false;
  unw_context_t context;
  unw_cursor_t cursor;
  if (g_unw.getcontext(&context) != 0 || g_unw.init_local(&cursor, &context) != 0) return false;
  // The first frame is this function: its IP is exact. Every later frame's IP is a return
  // address, except the one a signal frame interrupted.
  bool exact_ip = true;
  for (int depth = 0; depth < kMaxCallerFrames; ++depth) {
    unw_word_t ip = 0;
    if (g_unw.get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
    uintptr_t lookup = exact_ip ? ip : ip - 1;
    if (frame_matches(pattern, &cursor, ip, lookup, skip_module_base)) return true;
    exact_ip = g_unw.is_signal_frame(&cursor) > 0;
    if (g_unw.step(&cursor) <= 0) break;
  }
  return false;
}

uintptr_t module_base_of(const void *addr) {
  Dl_info info;
  if (dladdr(addr, &info) == 0) return 0;
  return reinterpret_cast<uintptr_t>(info.dli_fbase);
}

bool symbol_at(const void *addr, char *buf, size_t buf_len) {
  if (!buf_len) return false;
  buf[0] = 0;
  if (!caller_ready()) return false;
  // libunwind looks names up through a cursor only: make one from a context whose IP is addr
  // (it is never stepped). unw_init_local() would treat that IP as a return address and look up
  // addr - 1, which is the end of the previous function; a cursor flagged as a signal frame
  // takes the IP as exact.
  unw_context_t context;
  unw_cursor_t cursor;
  if (g_unw.getcontext(&context) != 0) return false;
  context.uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(reinterpret_cast<uintptr_t>(addr));
  if (g_unw.init_local2(&cursor, &context, UNW_INIT_SIGNAL_FRAME) != 0) return false;
  unw_word_t off = 1;
  if (g_unw.get_proc_name(&cursor, buf, buf_len, &off) != 0 || off != 0) {
    buf[0] = 0;
    return false;
  }
  return true;
}

}  // namespace mpk::cfg

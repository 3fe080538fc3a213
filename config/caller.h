// caller.h - "who is mapping this?": call-stack criteria, by libunwind local unwinding.
//
// A pattern is one of
//   "lj_mcode_*"              a symbol glob, matched against each frame's procedure name as
//                             libunwind reports it (mangled for C++; from .symtab or .dynsym, so
//                             a stripped module only shows its exported symbols);
//   "libluajit*.so*+0x1a2b0"  a module (basename glob of the object file dladdr names) and an
//                             offset from the module's load base: a frame matches when its
//                             return address is there (the "+0x..." glibc's backtrace_symbols
//                             prints) or when the function it is in starts there (nm/objdump
//                             addresses of a shared object or PIE), the function's bounds taken
//                             from the module's unwind tables, which stripped modules keep;
//   "libluajit*.so*+*"        anywhere in the module.
// '+' never occurs in a symbol name, so it marks the module form.
//
// libunwind (libunwind.so.8) is loaded by caller_init() with dlopen(RTLD_LOCAL), never linked:
// it defines _Unwind_RaiseException and the rest of the C++ unwinder ABI, and a preloaded
// library that depended on it would put those definitions ahead of libgcc_s's for the whole
// process (a C program that later loads C++ code would throw exceptions through it).
// load_policy() calls caller_init() when the policy has caller criteria or start-routine rules.
//
// Matching walks at most kMaxCallerFrames frames. It never calls malloc, but libunwind opens and
// maps ELF files with the public open/mmap/munmap to read symbol tables: an interposing caller
// must let those calls through (its re-entry guard) and must not call this from a signal handler.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpk::cfg {

inline constexpr int kMaxCallerFrames = 64;
inline constexpr size_t kCallerPatternMax = 255;

enum class CallerKind : uint8_t { kSymbol, kModuleOffset, kModuleAny };

struct CallerPattern {
  CallerKind kind = CallerKind::kSymbol;
  char glob[kCallerPatternMax + 1] = {};  // symbol glob, or the module basename glob
  uint64_t offset = 0;                    // kModuleOffset only
};

// Parses the text of a `caller` value. On failure returns false and points *why at a reason.
bool parse_caller_pattern(const char *text, CallerPattern *out, const char **why);

// Loads libunwind and resolves the functions used here. Idempotent; call it at start-up, not on
// an interposed path (it calls dlopen). On failure returns false with the reason in err.
bool caller_init(char *err, size_t err_len);
bool caller_ready();

// True when some frame of the calling thread's stack matches. Frames whose module is loaded at
// skip_module_base are ignored (pass the shim's own base, from module_base_of(), so its frames
// never count; 0 considers every frame). False when caller_init() has not succeeded.
bool caller_matches(const CallerPattern &pattern, uintptr_t skip_module_base);

// The load base (dladdr's dli_fbase) of the module containing addr; 0 if none.
uintptr_t module_base_of(const void *addr);

// The name of the function that starts exactly at addr (e.g. a thread's start routine) into buf:
// libunwind's symbol lookup, which also sees static functions in modules that keep .symtab.
// Same caveats as caller_matches(). Returns false when no symbol starts at addr, or before
// caller_init() has succeeded.
bool symbol_at(const void *addr, char *buf, size_t buf_len);

}  // namespace mpk::cfg

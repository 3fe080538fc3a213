// interpose_longjmp.cc - a longjmp out of a gated call closes the gate (gates.h), and one out of a
// program's signal handler ends the handler for the shim (shim.h: handlers_leave_below).
//
// The jump's target stack pointer is in the jmp_buf, mangled by glibc (PTR_MANGLE on x86-64:
// xor with the thread's pointer guard at %fs:0x30, then rotate left by 17); every gate entered
// below it is left before the real longjmp runs. Without gates the thread's gate stack is empty
// and this is one comparison.
#ifndef MPK_NO_ALLOCATOR  // a sanitized build: the sanitizer owns these (preload/CMakeLists.txt)
#include <setjmp.h>

#include "gates.h"
#include "next_symbol.h"
#include "shim.h"

namespace {

using JumpFn = void (*)(struct __jmp_buf_tag *, int);

uintptr_t target_sp(const struct __jmp_buf_tag *env) {
  constexpr int kJbRsp = 6;  // glibc's sysdeps/x86_64/jmpbuf-offsets.h
  auto v = static_cast<uintptr_t>(env->__jmpbuf[kJbRsp]);
  uintptr_t guard;
  asm("movq %%fs:0x30, %0" : "=r"(guard));
  v = (v >> 17) | (v << (64 - 17));
  return v ^ guard;
}

[[noreturn]] void jump(const char *name, JumpFn *slot, struct __jmp_buf_tag *env, int val) {
  const uintptr_t sp = target_sp(env);
  mpk::shim::handlers_leave_below(sp);
  mpk::shim::gates_leave_below(sp);
  mpk::shim::next_cached(name, slot)(env, val);
  __builtin_unreachable();
}

constinit JumpFn g_longjmp = nullptr, g__longjmp = nullptr, g_siglongjmp = nullptr, g_longjmp_chk = nullptr;

}  // namespace

MPK_EXPORT void longjmp(struct __jmp_buf_tag env[1], int val) { jump("longjmp", &g_longjmp, env, val); }
MPK_EXPORT void _longjmp(struct __jmp_buf_tag env[1], int val) { jump("_longjmp", &g__longjmp, env, val); }
MPK_EXPORT void siglongjmp(struct __jmp_buf_tag env[1], int val) { jump("siglongjmp", &g_siglongjmp, env, val); }
extern "C" [[noreturn]] void __longjmp_chk(struct __jmp_buf_tag env[1], int val);
MPK_EXPORT void __longjmp_chk(struct __jmp_buf_tag env[1], int val) { jump("__longjmp_chk", &g_longjmp_chk, env, val); }

#endif  // MPK_NO_ALLOCATOR

// interpose_pkey.cc - the program's own protection-key calls: pkey_alloc, pkey_free,
// pkey_mprotect, pkey_get, pkey_set, and syscall() with SYS_pkey_alloc, SYS_pkey_free or
// SYS_pkey_mprotect.
//
// The keys the engine holds (key_backend.h: engine_keys) are not the program's: to the program
// they look exactly like keys nobody allocated.
// - pkey_free of one fails with EINVAL, as the kernel answers for an unallocated key.
// - pkey_mprotect with one goes to the kernel with a key number no kernel can have allocated
//   (kNoSuchKey) in its place: the kernel checks the range and prot first and then refuses the
//   key, so the answer (0 for an empty range, EINVAL, ENOMEM, ...) is the kernel's own for an
//   unallocated key, and nothing changes.
// - pkey_alloc is the kernel's: it never hands out a key the engine holds, and the engine's later
//   pkey_alloc never gets a key the program holds. On simulated keys (MPK_SIMULATE=1) on a CPU
//   with PKU the two pools are separate, so a real key that is also a simulated one is held back
//   and another asked for, and the simulated pool skips the program's keys (key_backend.cc).
// - pkey_get/pkey_set (glibc reads and writes PKRU in user space, no system call): on an engine
//   key they work on a per-thread copy, as if on the bits of an unallocated key, and leave the
//   engine's bits alone. Every other key is glibc's code, the same instructions.
// - syscall() is an assembly stub that makes every other system call itself exactly as glibc's
//   syscall() does (six arguments, no stack frame of its own, errno on failure), so clone, vfork
//   and anything else behave as without the shim; the three pkey numbers go to the code above.
//
// A raw `syscall` instruction in the program bypasses all this; MPK_SECCOMP=1 adds a filter for
// that (pkey_gate.h). Without protection keys (a pass-through shim) the engine holds no key and
// every call here is exactly the program's call. Nothing here allocates or takes a lock.
#include <sys/mman.h>
#include <sys/syscall.h>

#include <cerrno>
#include <climits>
#include <cstdint>

#include "key_backend.h"
#include "legacy.h"
#include "shim.h"
#include "sys.h"

#define MPK_STR2(x) #x
#define MPK_STR(x) MPK_STR2(x)

namespace {

// A key number beyond every kernel's (x86 has 16): the kernel's own check refuses it as it
// refuses an unallocated key.
constexpr long kNoSuchKey = INT_MAX;
constexpr unsigned kX32Bit = 0x40000000u;  // __X32_SYSCALL_BIT

long ret_errno(long r) {
  if (mpk::sys::failed(r)) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}

// pkey_alloc with system call number nr. Keys the engine holds are never handed out (only
// possible on simulated keys): they are held back while another is asked for, then given back.
long program_pkey_alloc(long nr, long flags, long rights) {
  int parked[16];
  int nparked = 0;
  long k;
  for (;;) {
    k = mpk::sys::raw(nr, flags, rights);
    if (k <= 0 || !mpk::engine_key(k) || nparked == 16) break;
    parked[nparked++] = static_cast<int>(k);
  }
  for (int i = 0; i < nparked; ++i) mpk::sys::raw(nr - SYS_pkey_alloc + SYS_pkey_free, parked[i]);
  if (k > 0 && !mpk::sys::failed(k)) {
    mpk::note_program_key(static_cast<int>(k), true);
    mpk::legacy_note_program_key();
  }
  return k;
}

long program_pkey_free(long nr, long key) {
  int k = static_cast<int>(key);  // the kernel takes an int
  if (mpk::engine_key(k)) return mpk::sys::raw(nr, kNoSuchKey);
  long r = mpk::sys::raw(nr, key);
  if (r == 0) mpk::note_program_key(k, false);
  return r;
}

long program_pkey_mprotect(long nr, long addr, long len, long prot, long key) {
  int k = static_cast<int>(key);
  if (mpk::engine_key(k)) return mpk::sys::raw(nr, addr, len, prot, kNoSuchKey);
  // The plain number goes through the emulation (a range in a page group leaves it first), as
  // mprotect does (interpose_mm.cc): not from a handler that interrupted the engine.
  if (nr == SYS_pkey_mprotect) {
    return mpk::legacy_pkey_mprotect(reinterpret_cast<void *>(addr), static_cast<size_t>(len),
                                     static_cast<int>(prot), k);
  }
  return mpk::sys::raw(nr, addr, len, prot, key);
}

// The PKRU register, as glibc's pkey_get/pkey_set read and write it (the real instructions: the
// program's view, never the simulated register).
inline uint32_t read_pkru() {
  uint32_t eax, edx;
  asm volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
  return eax;
}
inline void write_pkru(uint32_t v) { asm volatile(".byte 0x0f,0x01,0xef" : : "a"(v), "c"(0), "d"(0) : "memory"); }

// The program's view of the engine's keys' bits in this thread, set by pkey_set (bit 2k: a value
// was set; 2 bits per key in t_view). Until then an engine key reads as a fresh process's
// unallocated key: PKEY_DISABLE_ACCESS.
thread_local uint32_t t_view __attribute__((tls_model("initial-exec"))) = 0;
thread_local uint32_t t_view_set __attribute__((tls_model("initial-exec"))) = 0;

bool virtual_key(int key) { return mpk::g_backend == mpk::Backend::kHardware && mpk::engine_key(key); }

}  // namespace

// Called by the syscall() stub below for the three pkey numbers (with the x32 bit, too), with
// the stub's own arguments; returns what syscall() returns.
extern "C" __attribute__((visibility("hidden"), used)) long mpk_shim_pkey_syscall(long nr, long a1, long a2, long a3,
                                                                                 long a4, long /*a5*/) {
  int saved = errno;
  long r;
  switch (static_cast<unsigned>(nr) & ~kX32Bit) {
    case SYS_pkey_alloc: r = program_pkey_alloc(nr, a1, a2); break;
    case SYS_pkey_free: r = program_pkey_free(nr, a1); break;
    default: r = program_pkey_mprotect(nr, a1, a2, a3, a4); break;
  }
  errno = saved;
  return ret_errno(r);
}

extern "C" __attribute__((visibility("hidden"), used)) long mpk_shim_syscall_error(long r) {
  errno = static_cast<int>(-r);
  return -1;
}

// long syscall(long number, ...): glibc's stub, plus a detour for the pkey numbers. The kernel
// reads the number's low 32 bits (and x32 numbers carry bit 30), so those are compared.
asm(R"(
  .text
  .globl syscall
  .type syscall, @function
  .p2align 4
syscall:
  .cfi_startproc
  movl %edi, %eax
  andl $~0x40000000, %eax
  cmpl $)" MPK_STR(SYS_pkey_mprotect) R"(, %eax
  je 2f
  cmpl $)" MPK_STR(SYS_pkey_alloc) R"(, %eax
  je 2f
  cmpl $)" MPK_STR(SYS_pkey_free) R"(, %eax
  je 2f
  movq %rdi, %rax
  movq %rsi, %rdi
  movq %rdx, %rsi
  movq %rcx, %rdx
  movq %r8, %r10
  movq %r9, %r8
  movq 8(%rsp), %r9
  syscall
  cmpq $-4095, %rax
  jae 1f
  ret
1:
  movq %rax, %rdi
  jmp mpk_shim_syscall_error
2:
  jmp mpk_shim_pkey_syscall
  .cfi_endproc
  .size syscall, .-syscall
)");

MPK_EXPORT int pkey_alloc(unsigned int flags, unsigned int rights) {
  int saved = errno;
  long r = program_pkey_alloc(SYS_pkey_alloc, flags, rights);
  errno = saved;
  return static_cast<int>(ret_errno(r));
}

// The shim's own keys are not the program's to free: the kernel's answer for a key the program
// never allocated.
MPK_EXPORT int pkey_free(int pkey) {
  int saved = errno;
  long r = program_pkey_free(SYS_pkey_free, pkey);
  errno = saved;
  return static_cast<int>(ret_errno(r));
}

MPK_EXPORT int pkey_mprotect(void *addr, size_t len, int prot, int pkey) {
  int saved = errno;
  long r = program_pkey_mprotect(SYS_pkey_mprotect, reinterpret_cast<long>(addr), static_cast<long>(len), prot, pkey);
  errno = saved;
  return static_cast<int>(ret_errno(r));
}

// glibc 2.36 (sysdeps/unix/sysv/linux/x86/pkey_get.c, pkey_set.c), engine keys aside.
MPK_EXPORT int pkey_get(int key) {
  if (key < 0 || key > 15) {
    errno = EINVAL;
    return -1;
  }
  if (virtual_key(key)) {
    uint32_t bit = 1u << (2 * key);
    return (t_view_set & bit) ? static_cast<int>((t_view >> (2 * key)) & 3) : PKEY_DISABLE_ACCESS;
  }
  return static_cast<int>((read_pkru() >> (2 * key)) & 3);
}

MPK_EXPORT int pkey_set(int key, unsigned int rights) {
  if (key < 0 || key > 15 || rights > 3) {
    errno = EINVAL;
    return -1;
  }
  unsigned int mask = 3u << (2 * key);
  if (virtual_key(key)) {
    t_view = (t_view & ~mask) | (rights << (2 * key));
    t_view_set |= 1u << (2 * key);
    return 0;
  }
  write_pkru((read_pkru() & ~mask) | (rights << (2 * key)));
  return 0;
}

#include "pkey_gate.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "raw_log.h"
#include "sys.h"

namespace mpk {

namespace {

// The gate: long gate(long nr, long a, long b, long c, long d), the engine's only pkey_free and
// pkey_mprotect instruction when enabled. The filter knows it by the address after `syscall`.
constexpr unsigned char kGateCode[] = {
    0x48, 0x89, 0xf8,  // mov %rdi,%rax
    0x48, 0x89, 0xf7,  // mov %rsi,%rdi
    0x48, 0x89, 0xd6,  // mov %rdx,%rsi
    0x48, 0x89, 0xca,  // mov %rcx,%rdx
    0x4d, 0x89, 0xc2,  // mov %r8,%r10
    0x0f, 0x05,        // syscall
    0xc3,              // ret
};
constexpr uintptr_t kGateReturnIp = kGateAddress + 17;  // seccomp_data.instruction_pointer
using GateFn = long (*)(long, long, long, long, long);

// 0 undecided, 1 enabled, 2 off. Decided once (the first caller maps the gate).
constinit std::atomic<int> g_state{0};
constinit std::atomic<bool> g_no_new_privs_set{false};

bool requested() {
  const char *v = getenv("MPK_SECCOMP");
  return v && v[0] == '1' && v[1] == '\0';
}

bool map_gate() {
  void *want = reinterpret_cast<void *>(kGateAddress);
  void *p = sys::mmap(want, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (sys::mmap_failed(p) || p != want) {
    if (!sys::mmap_failed(p)) sys::munmap(p, 4096);  // an old kernel took the address as a hint
    MPK_LOG(kWarn, "MPK_SECCOMP=1: cannot map the pkey gate at %p (errno %d); no seccomp filter",
            want, sys::mmap_failed(p) ? (int)-(long)p : 0);
    return false;
  }
  std::memcpy(p, kGateCode, sizeof kGateCode);
  if (sys::mprotect(p, 4096, PROT_READ | PROT_EXEC) != 0) {
    sys::munmap(p, 4096);
    return false;
  }
  return true;
}

// seccomp_data offsets (x86: little-endian, low half first).
constexpr uint32_t kNr = 0, kArch = 4, kIpLo = 8, kIpHi = 12;
constexpr uint32_t arg_lo(int i) { return 16 + 8 * i; }
constexpr uint32_t arg_hi(int i) { return 20 + 8 * i; }

// A tiny assembler for classic BPF with forward labels.
struct Prog {
  static constexpr int kMax = 96;
  sock_filter insn[kMax];
  int label_of[kMax][2];  // per instruction: label index for jt, jf (-1: literal offset)
  int label_at[16];
  int n = 0;
  bool overflow = false;

  void emit(uint16_t code, uint32_t k, int jt = -1, int jf = -1) {
    if (n == kMax) {
      overflow = true;
      return;
    }
    insn[n] = sock_filter{code, 0, 0, k};
    label_of[n][0] = jt;
    label_of[n][1] = jf;
    ++n;
  }
  void ld(uint32_t off) { emit(BPF_LD | BPF_W | BPF_ABS, off); }
  void ldm(uint32_t m) { emit(BPF_LD | BPF_MEM, m); }
  void ldxm(uint32_t m) { emit(BPF_LDX | BPF_MEM, m); }
  void st(uint32_t m) { emit(BPF_ST, m); }
  void alu(uint16_t op, uint32_t k) { emit(BPF_ALU | op | BPF_K, k); }
  void alux(uint16_t op) { emit(BPF_ALU | op | BPF_X, 0); }
  // Conditional jump on A (op K or X) to labels; -2 means "the next instruction".
  void jmp(uint16_t op, uint32_t k, int jt, int jf) { emit(BPF_JMP | op | BPF_K, k, jt, jf); }
  void jmpx(uint16_t op, int jt, int jf) { emit(BPF_JMP | op | BPF_X, 0, jt, jf); }
  void ret(uint32_t k) { emit(BPF_RET | BPF_K, k); }
  void label(int l) { label_at[l] = n; }
  bool resolve() {
    if (overflow) return false;
    for (int i = 0; i < n; ++i) {
      for (int s = 0; s < 2; ++s) {
        int l = label_of[i][s];
        if (l == -1) continue;
        int target = l == -2 ? i + 1 : label_at[l];
        int off = target - (i + 1);
        if (off < 0 || off > 255) return false;
        (s == 0 ? insn[i].jt : insn[i].jf) = static_cast<uint8_t>(off);
      }
    }
    return true;
  }
};

enum Label { kAllow, kDeny, kI386, kFree, kMprot, kFreeKey, kMprotKey, kAligned, kNoWrap, kCheckProt, kNumLabels };
constexpr int kNext = -2;

// The filter for one key: see pkey_gate.h. Scratch memory: M[0] ~start.lo, M[1] ~start.hi,
// M[2] aligned len lo, M[3] aligned len hi.
bool build(Prog &p, uint32_t key) {
  // Allowed if made from the gate's own call site; else on to `not_gate`.
  auto allow_from_gate = [&p](int not_gate) {
    p.ld(kIpLo);
    p.jmp(BPF_JEQ, static_cast<uint32_t>(kGateReturnIp), kNext, not_gate);
    p.ld(kIpHi);
    p.jmp(BPF_JEQ, static_cast<uint32_t>(kGateReturnIp >> 32), kAllow, not_gate);
  };
  p.ld(kArch);
  p.jmp(BPF_JEQ, AUDIT_ARCH_X86_64, kNext, kI386);
  p.ld(kNr);
  p.jmp(BPF_JEQ, SYS_pkey_free, kFree, kNext);
  p.jmp(BPF_JEQ, 0x40000000u | SYS_pkey_free, kFree, kNext);
  p.jmp(BPF_JEQ, SYS_pkey_mprotect, kMprot, kNext);
  p.jmp(BPF_JEQ, 0x40000000u | SYS_pkey_mprotect, kMprot, kAllow);
  p.label(kI386);
  p.jmp(BPF_JEQ, AUDIT_ARCH_I386, kNext, kAllow);
  p.ld(kNr);
  p.jmp(BPF_JEQ, 382, kFreeKey, kNext);   // i386 pkey_free
  p.jmp(BPF_JEQ, 380, kMprotKey, kAllow); // i386 pkey_mprotect
  // pkey_free: from the gate, or of another key: allowed.
  p.label(kFree);
  allow_from_gate(kFreeKey);
  p.label(kFreeKey);
  p.ld(arg_lo(0));  // the kernel takes an int
  p.jmp(BPF_JEQ, key, kDeny, kAllow);
  // pkey_mprotect(start, len, prot, key).
  p.label(kMprot);
  allow_from_gate(kMprotKey);
  p.label(kMprotKey);
  p.ld(arg_lo(3));
  p.jmp(BPF_JEQ, key, kNext, kAllow);
  // What the kernel checks before the key (do_mprotect_pkey): a call it answers without looking
  // at the key goes through and gets that answer. Both PROT_GROWSDOWN and PROT_GROWSUP: EINVAL.
  p.ld(arg_lo(2));
  p.alu(BPF_AND, PROT_GROWSDOWN | PROT_GROWSUP);
  p.jmp(BPF_JEQ, PROT_GROWSDOWN | PROT_GROWSUP, kAllow, kNext);
  // An unaligned start: EINVAL.
  p.ld(arg_lo(0));
  p.jmp(BPF_JSET, 0xfff, kAllow, kNext);
  // An empty range: 0.
  p.ld(arg_hi(1));
  p.emit(BPF_MISC | BPF_TAX, 0);
  p.ld(arg_lo(1));
  p.alux(BPF_OR);
  p.jmp(BPF_JEQ, 0, kAllow, kNext);
  // len = PAGE_ALIGN(len), 64 bits in two halves; end = start + len <= start (it wraps, or len
  // wrapped to 0): ENOMEM. It wraps when len > ~start.
  p.ld(arg_lo(1));
  p.alu(BPF_ADD, 4095);
  p.st(2);
  p.jmp(BPF_JGE, 4095, kAligned, kNext);  // no carry out of the low half
  p.ld(arg_hi(1));
  p.alu(BPF_ADD, 1);
  p.st(3);
  p.jmp(BPF_JA, 0, -1, -1);  // placeholder, fixed below
  int ja_at = p.n - 1;
  p.label(kAligned);
  p.ld(arg_hi(1));
  p.st(3);
  int after_carry = p.n;
  p.ldm(2);
  p.alu(BPF_AND, ~4095u);
  p.st(2);
  p.emit(BPF_MISC | BPF_TAX, 0);
  p.ldm(3);
  p.alux(BPF_OR);
  p.jmp(BPF_JEQ, 0, kAllow, kNext);  // len wrapped to 0: ENOMEM
  p.ld(arg_lo(0));
  p.alu(BPF_XOR, 0xffffffffu);
  p.st(0);
  p.ld(arg_hi(0));
  p.alu(BPF_XOR, 0xffffffffu);
  p.st(1);
  p.emit(BPF_MISC | BPF_TAX, 0);  // X = ~start.hi
  p.ldm(3);                       // A = len.hi
  p.jmpx(BPF_JGT, kAllow, kNext);
  p.jmpx(BPF_JEQ, kNext, kNoWrap);
  p.ldxm(0);
  p.ldm(2);
  p.jmpx(BPF_JGT, kAllow, kNoWrap);
  p.label(kNoWrap);
  p.label(kCheckProt);
  // prot beyond PROT_READ|WRITE|EXEC|SEM (after the grows bits are dropped): EINVAL.
  p.ld(arg_hi(2));
  p.jmp(BPF_JEQ, 0, kNext, kAllow);
  p.ld(arg_lo(2));
  p.jmp(BPF_JSET, ~static_cast<uint32_t>(PROT_READ | PROT_WRITE | PROT_EXEC | 0x8 | PROT_GROWSDOWN | PROT_GROWSUP),
        kAllow, kDeny);
  p.label(kDeny);
  p.ret(SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA));
  p.label(kAllow);
  p.ret(SECCOMP_RET_ALLOW);
  if (p.overflow) return false;
  // The unconditional jump over the no-carry branch.
  p.insn[ja_at] = sock_filter{BPF_JMP | BPF_JA, 0, 0, static_cast<uint32_t>(after_carry - (ja_at + 1))};
  p.label_of[ja_at][0] = p.label_of[ja_at][1] = -1;
  return p.resolve();
}

}  // namespace

bool pkey_gate_enabled() {
  int s = g_state.load(std::memory_order_acquire);
  if (s) return s == 1;
  int want = requested() && map_gate() ? 1 : 2;
  int expected = 0;
  if (!g_state.compare_exchange_strong(expected, want, std::memory_order_acq_rel)) {
    if (want == 1) sys::munmap(reinterpret_cast<void *>(kGateAddress), 4096);  // another thread won
    return expected == 1;
  }
  return want == 1;
}

long pkey_gate_call(long nr, long a, long b, long c, long d) {
  if (!pkey_gate_enabled()) return sys::raw(nr, a, b, c, d);
  return reinterpret_cast<GateFn>(kGateAddress)(nr, a, b, c, d);
}

int pkey_gate_protect(int key) {
  if (!pkey_gate_enabled()) return 0;
  Prog p;
  if (!build(p, static_cast<uint32_t>(key))) {
    MPK_LOG(kError, "MPK_SECCOMP=1: cannot build the filter for key %d", key);
    return -EINVAL;
  }
  sock_fprog prog{static_cast<unsigned short>(p.n), p.insn};
  long rc = sys::raw(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, (long)&prog);
  if (rc == -EACCES && !g_no_new_privs_set.load()) {
    // Not privileged: a filter needs no_new_privs (which stays for every program exec'd later).
    if (sys::raw(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0) {
      g_no_new_privs_set.store(true);
      rc = sys::raw(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, (long)&prog);
    }
  }
  if (rc != 0) {
    MPK_LOG(kWarn, "MPK_SECCOMP=1: cannot install the seccomp filter for key %d (%ld); raw system calls can free it",
            key, rc);
    return rc < 0 ? (int)rc : -ESRCH;  // TSYNC: a thread id that could not be synchronised
  }
  MPK_LOG(kDebug, "MPK_SECCOMP=1: key %d is guarded by a seccomp filter (%d instructions)", key, p.n);
  return 0;
}

}  // namespace mpk

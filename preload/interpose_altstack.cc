// interpose_altstack.cc - alternate signal stacks big enough for the shim's SIGSEGV handler.
//
// Every lazy grant is a SIGSEGV, and the shim's handler runs on the program's alternate stack
// (SA_ONSTACK: a program that set one up for stack overflows keeps it). A program that sized its
// stack with the old MINSIGSTKSZ (2 KiB) or SIGSTKSZ (8 KiB) leaves too little room on a CPU with
// a large XSAVE area: the signal frame alone can take 3 KiB and more with AVX-512, and the kernel
// then kills the thread, or the handler runs off the stack's end into the program's memory.
// So while the shim handles SIGSEGV, an alternate stack smaller than the frame the kernel reports
// (AT_MINSIGSTKSZ) plus room for the handlers (kHandlerRoom) is swapped for one of the shim's own
// of that size, with a guard page below it; sigaltstack() keeps reporting the program's stack.
// The kernel checks the program's request first, so every error is the kernel's.
#include <pthread.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/mman.h>

#include <cerrno>

#include "shim.h"
#include "sys.h"

namespace {

constexpr size_t kHandlerRoom = 32 * 1024;  // the shim's handler and a program handler above it
constexpr size_t kPage = 4096;

struct ThreadStacks {
  stack_t program{};      // what the program asked for (the view sigaltstack reports)
  bool swapped = false;   // the kernel has the shim's stack instead
  void *own = nullptr;    // the shim's stack (guard page included)
  size_t own_bytes = 0;
};
thread_local ThreadStacks t_stacks __attribute__((tls_model("initial-exec")));

// Set once the shim handles SIGSEGV (altstack_enable): until then every call is the kernel's
// alone. A sanitizer's runtime calls sigaltstack while it starts, before anything else of the
// shim may run (its instrumentation is not ready): so the wrapper below is not instrumented and
// reads only this flag and its thread's record until it is set.
constinit bool g_enabled = false;  // __atomic builtins: no call the instrumentation could see

pthread_key_t g_exit_key;
pthread_once_t g_exit_once = PTHREAD_ONCE_INIT;

size_t needed_size() {
  unsigned long frame = getauxval(AT_MINSIGSTKSZ);
  if (frame < static_cast<unsigned long>(MINSIGSTKSZ)) frame = MINSIGSTKSZ;
  return (frame + kHandlerRoom + kPage - 1) & ~(kPage - 1);
}

void release_own(void *) {
  ThreadStacks &t = t_stacks;
  if (t.own) mpk::sys::munmap(t.own, t.own_bytes);
  t.own = nullptr;
  t.own_bytes = 0;
}

// The shim's stack for this thread, at least `size` usable bytes; nullptr if none can be had.
void *own_stack(size_t size) {
  ThreadStacks &t = t_stacks;
  if (t.own && t.own_bytes - kPage >= size) return static_cast<char *>(t.own) + kPage;
  void *p = mpk::sys::mmap(nullptr, size + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                           -1, 0);
  if (mpk::sys::mmap_failed(p)) return nullptr;
  mpk::sys::mprotect(p, kPage, PROT_NONE);  // guard: an overflow faults instead of writing below
  if (t.own) mpk::sys::munmap(t.own, t.own_bytes);  // not in use: the kernel has the program's now
  t.own = p;
  t.own_bytes = size + kPage;
  // Freed when the thread ends (never while it runs on it: a thread exits on its normal stack).
  pthread_once(&g_exit_once, [] { pthread_key_create(&g_exit_key, release_own); });
  pthread_setspecific(g_exit_key, p);
  return static_cast<char *>(p) + kPage;
}

int real_altstack(const stack_t *ss, stack_t *old) {
  return static_cast<int>(mpk::sys::raw(SYS_sigaltstack, (long)ss, (long)old));
}

}  // namespace

namespace mpk::shim {
void altstack_enable() { __atomic_store_n(&g_enabled, true, __ATOMIC_RELEASE); }
}  // namespace mpk::shim

MPK_EXPORT __attribute__((no_sanitize("thread", "address", "undefined"))) int sigaltstack(const stack_t *ss,
                                                                                        stack_t *old) {
  ThreadStacks &t = t_stacks;
  stack_t kernel_old;
  // The program's request first, as given: the kernel's answer (EPERM on the stack, ENOMEM, EINVAL,
  // EFAULT) is the program's.
  long rc = real_altstack(ss, &kernel_old);
  if (rc != 0) {
    errno = static_cast<int>(-rc);
    return -1;
  }
  stack_t req{};
  if (ss) req = *ss;  // read before *old is written: the two may be the same object
  if (old) {
    *old = kernel_old;
    if (t.swapped) {  // the program's view, with the kernel's flags (SS_ONSTACK, SS_DISABLE)
      old->ss_sp = t.program.ss_sp;
      old->ss_size = t.program.ss_size;
    }
  }
  if (!ss) return 0;
  t.swapped = false;
  t.program = req;
  if ((req.ss_flags & SS_DISABLE) || !__atomic_load_n(&g_enabled, __ATOMIC_ACQUIRE)) return 0;
  const size_t need = needed_size();
  if (req.ss_size >= need) return 0;
  if (void *sp = own_stack(need)) {
    stack_t mine = req;
    mine.ss_sp = sp;
    mine.ss_size = need;
    if (real_altstack(&mine, nullptr) == 0) t.swapped = true;
  }
  return 0;
}

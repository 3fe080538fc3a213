#include "roots.h"

#include <sys/mman.h>

#include "raw_log.h"
#include "sys.h"

namespace mpk {

constinit Roots g_roots;

namespace {
// The writer's state cannot live in the sealed page.
constinit std::atomic<bool> g_sealed{false};
constinit std::atomic<int> g_writer{0};  // tid of the thread with the page open, 0 none
constinit int g_depth = 0;               // its nesting (written by the writer only)

void set_page(int prot) {
  if (sys::mprotect(&g_roots, sizeof g_roots, prot) != 0) {
    raw_log(LogLevel::kError, "cannot change the protection of the engine's roots page");
    __builtin_trap();
  }
}
}  // namespace

void roots_seal() {
  if (g_sealed.exchange(true, std::memory_order_acq_rel)) return;
  set_page(PROT_READ);
}

static void acquire_writer(int me) {
  for (int free = 0; !g_writer.compare_exchange_weak(free, me, std::memory_order_acq_rel); free = 0)
    sys::sched_yield();
}

void roots_fork_prepare() { acquire_writer(-1); }
void roots_fork_parent() { g_writer.store(0, std::memory_order_release); }
void roots_fork_child() { g_writer.store(0, std::memory_order_release); }

RootsWrite::RootsWrite() {
  if (!g_sealed.load(std::memory_order_acquire)) return;
  int me = sys::gettid();
  if (g_writer.load(std::memory_order_acquire) == me) {
    ++g_depth;
    return;
  }
  acquire_writer(me);
  g_depth = 1;
  opened_ = true;
  set_page(PROT_READ | PROT_WRITE);
}

RootsWrite::~RootsWrite() {
  if (!opened_) {
    if (g_depth > 0 && g_writer.load(std::memory_order_relaxed) == sys::gettid()) --g_depth;
    return;
  }
  // Ordering: the page is closed before the next writer may open it.
  g_depth = 0;
  set_page(PROT_READ);
  g_writer.store(0, std::memory_order_release);
}

}  // namespace mpk

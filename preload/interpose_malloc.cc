// interpose_malloc.cc - the allocator, for heap regions (policy `heap = true`).
//
// Every allocation function is the shim's. With no heap region in the policy (or before the shim
// has started) each one tests one word and calls the next definition of the same function, the
// one the program would have called without the shim: glibc's, or a sanitizer runtime's, or a
// malloc library the program links. Those are found once, on the first call, by reading the
// dynamic symbol tables (next_symbol.h): no lock, no dlsym, so the first call may come from the
// dynamic linker itself, before the shim is initialised, or in a fork child. The function
// pointers then sit in a page of their own that is made read-only.
//
// With heap regions, an allocation is matched by size, then by the module its return address
// lies in (a range test), then, if the region asks, by its call stack; a match is served from
// that region's isolated heap (core/src/region_heap.h), anything else as without the shim.
// free() and realloc() tell the two apart by address alone: one subtraction and compare against
// the region heaps' reservation. realloc keeps a block in the heap it came from: a region's block
// grows inside the region, any other block stays where it is whatever its new size.
#ifndef MPK_NO_ALLOCATOR  // a sanitized build (preload/CMakeLists.txt)

#include <malloc.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>

#include "heap_rules.h"
#include "next_symbol.h"
#include "raw_log.h"
#include "region_heap.h"
#include "shim.h"
#include "stats.h"
#include "sys.h"

namespace {

// The next definitions, resolved together on first use.
struct alignas(4096) NextAllocator {
  decltype(&::malloc) malloc;
  decltype(&::free) free;
  decltype(&::calloc) calloc;
  decltype(&::realloc) realloc;
  decltype(&::reallocarray) reallocarray;
  decltype(&::memalign) memalign;
  decltype(&::aligned_alloc) aligned_alloc;
  decltype(&::posix_memalign) posix_memalign;
  decltype(&::valloc) valloc;
  decltype(&::pvalloc) pvalloc;
  decltype(&::malloc_usable_size) malloc_usable_size;
};
constinit NextAllocator g_next{};
constinit std::atomic<int> g_next_state{0};  // 0 unresolved, 1 resolving, 2 ready

template <typename F>
void resolve_one(F *slot, const char *name) {
  *slot = reinterpret_cast<F>(mpk::shim::next_symbol(name));
  if (!*slot) {
    mpk::raw_log(mpk::LogLevel::kError, "no %s after libmpk_shim.so in the program's libraries", name);
    mpk::sys::raw(SYS_exit_group, 127);
  }
}

__attribute__((noinline, cold)) void resolve_next() {
  int expected = 0;
  if (!g_next_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    while (g_next_state.load(std::memory_order_acquire) != 2) __builtin_ia32_pause();
    return;
  }
  resolve_one(&g_next.malloc, "malloc");
  resolve_one(&g_next.free, "free");
  resolve_one(&g_next.calloc, "calloc");
  resolve_one(&g_next.realloc, "realloc");
  resolve_one(&g_next.reallocarray, "reallocarray");
  resolve_one(&g_next.memalign, "memalign");
  resolve_one(&g_next.aligned_alloc, "aligned_alloc");
  resolve_one(&g_next.posix_memalign, "posix_memalign");
  resolve_one(&g_next.valloc, "valloc");
  resolve_one(&g_next.pvalloc, "pvalloc");
  resolve_one(&g_next.malloc_usable_size, "malloc_usable_size");
  // Ordering: complete, then read-only, then published.
  mpk::sys::mprotect(&g_next, sizeof g_next, PROT_READ);
  g_next_state.store(2, std::memory_order_release);
}

inline const NextAllocator &next() {
  if (__builtin_expect(g_next_state.load(std::memory_order_acquire) != 2, 0)) resolve_next();
  return g_next;
}

}  // namespace

namespace {

using mpk::shim::heap_rules;
using mpk::shim::HeapRules;

constexpr size_t kMinAlign = 16;
constexpr size_t kMaxRegionAlign = size_t{64} << 10;

// Could a heap region take an allocation of `size`? The inline test every allocation pays: no
// heap region, or a size no rule takes (outside any gate), and the call goes on at once.
bool active(const HeapRules &t, size_t size) {
  return __builtin_expect(t.count != 0, 0) && mpk::shim::heap_rules_may_match(t, size);
}
bool active(const HeapRules &t) { return __builtin_expect(t.count != 0, 0); }

// A block from the heap region the allocation matches, or nullptr: glibc serves it.
__attribute__((noinline, cold)) void *region_alloc(const HeapRules &t, size_t size, size_t align, const void *ret) {
  if (align > kMaxRegionAlign) return nullptr;
  int region = mpk::shim::heap_rule_match(t, size, ret);
  if (region < 0) return nullptr;
  int saved = errno;
  void *p = mpk::region_heap_alloc(region, size, align);
  errno = saved;
  if (!p) mpk::bump(mpk::stats().region_unserved);
  return p;
}

bool pow2(size_t x) { return x && !(x & (x - 1)); }

}  // namespace

namespace {

__attribute__((noinline, cold)) void *malloc_matched(const HeapRules &t, size_t size, const void *ret) {
  if (void *p = region_alloc(t, size, kMinAlign, ret)) return p;
  return next().malloc(size);
}

__attribute__((noinline, cold)) void free_region_block(void *p) {
  int saved = errno;  // free() leaves errno alone (POSIX 2024)
  mpk::region_heap_free(p);
  errno = saved;
}

}  // namespace

MPK_EXPORT void *malloc(size_t size) {
  const HeapRules &t = heap_rules();
  if (active(t, size)) return malloc_matched(t, size, __builtin_return_address(0));
  return next().malloc(size);
}

MPK_EXPORT void free(void *p) {
  if (__builtin_expect(!mpk::region_heap_owns(p), 1)) return next().free(p);
  free_region_block(p);
}

MPK_EXPORT void *calloc(size_t n, size_t size) {
  const HeapRules &t = heap_rules();
  size_t bytes;
  if (active(t) && !__builtin_mul_overflow(n, size, &bytes) && active(t, bytes)) {
    // A freed block is reused as it was left: zero it.
    if (void *p = region_alloc(t, bytes, kMinAlign, __builtin_return_address(0))) return std::memset(p, 0, bytes);
  }
  return next().calloc(n, size);
}

namespace {

void *region_realloc(void *p, size_t size) {
  if (size == 0) {  // glibc's realloc(p, 0): frees p, returns NULL
    free(p);
    return nullptr;
  }
  int region;
  size_t have = mpk::region_heap_usable(p, &region);
  if (!have) {
    // Inside the reservation but not a live block: glibc would abort ("realloc(): invalid
    // pointer"). The program keeps running; the call fails.
    mpk::region_heap_free(p);  // reports it
    errno = EINVAL;
    return nullptr;
  }
  if (size <= have) return p;
  int saved = errno;
  void *q = mpk::region_heap_alloc(region, size, kMinAlign);
  if (!q) {
    errno = ENOMEM;  // p is left as it was
    return nullptr;
  }
  std::memcpy(q, p, have);
  mpk::region_heap_free(p);
  errno = saved;
  return q;
}

}  // namespace

MPK_EXPORT void *realloc(void *p, size_t size) {
  if (__builtin_expect(!mpk::region_heap_owns(p), 1)) {
    if (p) return next().realloc(p, size);
    const HeapRules &t = heap_rules();  // realloc(NULL, n): matched as its caller's malloc
    if (active(t, size))
      if (void *q = region_alloc(t, size, kMinAlign, __builtin_return_address(0))) return q;
    return next().malloc(size);
  }
  return region_realloc(p, size);
}

MPK_EXPORT void *reallocarray(void *p, size_t n, size_t size) {
  size_t bytes;
  bool overflow = __builtin_mul_overflow(n, size, &bytes);
  if (__builtin_expect(mpk::region_heap_owns(p), 0)) {
    if (overflow) {
      errno = ENOMEM;
      return nullptr;
    }
    return region_realloc(p, bytes);
  }
  if (!p && !overflow) {
    const HeapRules &t = heap_rules();
    if (active(t, bytes))
      if (void *q = region_alloc(t, bytes, kMinAlign, __builtin_return_address(0))) return q;
  }
  return next().reallocarray(p, n, size);
}

MPK_EXPORT void *memalign(size_t align, size_t size) {
  const HeapRules &t = heap_rules();
  if (active(t, size) && pow2(align))
    if (void *p = region_alloc(t, size, align < kMinAlign ? kMinAlign : align, __builtin_return_address(0)))
      return p;
  return next().memalign(align, size);
}

MPK_EXPORT void *aligned_alloc(size_t align, size_t size) {
  const HeapRules &t = heap_rules();
  if (active(t, size) && pow2(align))
    if (void *p = region_alloc(t, size, align < kMinAlign ? kMinAlign : align, __builtin_return_address(0)))
      return p;
  return next().aligned_alloc(align, size);
}

MPK_EXPORT int posix_memalign(void **out, size_t align, size_t size) {
  const HeapRules &t = heap_rules();
  if (active(t, size) && pow2(align) && align % sizeof(void *) == 0)
    if (void *p = region_alloc(t, size, align < kMinAlign ? kMinAlign : align, __builtin_return_address(0))) {
      *out = p;
      return 0;
    }
  return next().posix_memalign(out, align, size);
}

MPK_EXPORT void *valloc(size_t size) {
  const HeapRules &t = heap_rules();
  if (active(t, size))
    if (void *p = region_alloc(t, size, 4096, __builtin_return_address(0))) return p;
  return next().valloc(size);
}

MPK_EXPORT void *pvalloc(size_t size) {
  const HeapRules &t = heap_rules();
  if (active(t, size) && size <= SIZE_MAX - 4095)
    if (void *p = region_alloc(t, (size + 4095) & ~size_t{4095}, 4096, __builtin_return_address(0))) return p;
  return next().pvalloc(size);
}

MPK_EXPORT size_t malloc_usable_size(void *p) {
  if (__builtin_expect(!mpk::region_heap_owns(p), 1)) return next().malloc_usable_size(p);
  return mpk::region_heap_usable(p);
}

#endif  // MPK_NO_ALLOCATOR

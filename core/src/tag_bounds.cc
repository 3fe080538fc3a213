#include "tag_bounds.h"

#include <atomic>

namespace mpk {

namespace {

constinit std::atomic<uintptr_t> g_bounds[kTagBounds] = {};
constinit std::atomic<uint32_t> g_next{0};

void note(uintptr_t a) {
  if (is_tag_bound(a)) return;
  g_bounds[g_next.fetch_add(1, std::memory_order_relaxed) % kTagBounds].store(a, std::memory_order_relaxed);
}

}  // namespace

void note_tag_bounds(uintptr_t start, size_t len) {
  note(start);
  note(start + len);
}

void forget_tag_bounds(uintptr_t start, size_t len) {
  for (auto &b : g_bounds) {
    uintptr_t a = b.load(std::memory_order_relaxed);
    if (a > start && a < start + len) b.compare_exchange_strong(a, 0, std::memory_order_relaxed);
  }
}

bool is_tag_bound(uintptr_t addr) {
  for (const auto &b : g_bounds)
    if (b.load(std::memory_order_relaxed) == addr) return true;
  return false;
}

}  // namespace mpk

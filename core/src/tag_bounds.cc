#include "tag_bounds.h"

#include <atomic>

namespace mpk {

namespace {

// kTagBounds addresses in kSets sets of kWays: an address lives only in the set its page number
// hashes to, so noting and looking up read kWays slots, not the whole table. Within a set the
// oldest note is replaced first (round robin), so what is kept is about the most recent
// kTagBounds ends, as a ring would keep them.
constexpr int kWays = 8;
constexpr int kSets = kTagBounds / kWays;
static_assert(kSets * kWays == kTagBounds && (kSets & (kSets - 1)) == 0, "a power of two of sets");

constinit std::atomic<uintptr_t> g_bounds[kSets][kWays] = {};
constinit std::atomic<uint8_t> g_next[kSets] = {};

int set_of(uintptr_t a) { return static_cast<int>(((a >> 12) * 0x9E3779B97F4A7C15ull) >> 32) & (kSets - 1); }

bool in_set(int s, uintptr_t a) {
  for (const auto &b : g_bounds[s])
    if (b.load(std::memory_order_relaxed) == a) return true;
  return false;
}

void note(uintptr_t a) {
  int s = set_of(a);
  if (in_set(s, a)) return;
  g_bounds[s][g_next[s].fetch_add(1, std::memory_order_relaxed) % kWays].store(a, std::memory_order_relaxed);
}

}  // namespace

void note_tag_bounds(uintptr_t start, size_t len) {
  note(start);
  note(start + len);
}

void forget_tag_bounds(uintptr_t start, size_t len) {
  for (auto &set : g_bounds) {
    for (auto &b : set) {
      uintptr_t a = b.load(std::memory_order_relaxed);
      if (a > start && a < start + len) b.compare_exchange_strong(a, 0, std::memory_order_relaxed);
    }
  }
}

bool is_tag_bound(uintptr_t addr) { return addr && in_set(set_of(addr), addr); }

}  // namespace mpk

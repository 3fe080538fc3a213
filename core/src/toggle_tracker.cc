#include "toggle_tracker.h"

namespace mpk {

uint32_t ToggleTracker::hash(uintptr_t start, size_t len) {
  uint64_t x = (start >> 12) * 0x9E3779B97F4A7C15ull ^ (len >> 12) * 0xC2B2AE3D27D4EB4Full;
  return static_cast<uint32_t>(x >> 40) & (kSlots - 1);
}

ToggleEntry &ToggleTracker::touch(uintptr_t start, size_t len, bool *fresh) {
  uint32_t h = hash(start, len);
  ToggleEntry *victim = nullptr;
  for (uint32_t i = 0; i < kWays; ++i) {
    ToggleEntry &e = slots_[(h + i) & (kSlots - 1)];
    if (e.len && e.start == start && e.len == len) {
      e.last = ++tick_;
      *fresh = false;
      return e;
    }
    if (!victim || (victim->len && (!e.len || e.last < victim->last))) victim = &e;
  }
  *victim = ToggleEntry{start, len, 0, 0, -1, false, 0, ++tick_};
  if (start < lo_) lo_ = start;
  if (start + len > hi_) hi_ = start + len;
  *fresh = true;
  return *victim;
}

const ToggleEntry *ToggleTracker::busier_container(uintptr_t start, size_t len, uint32_t count) const {
  for (const ToggleEntry &e : slots_) {
    if (!e.len || e.never || e.dissolves || e.start > start || e.start + e.len < start + len) continue;
    if (e.len == len) continue;  // the range itself
    if (uint64_t{e.count} * 4 >= count) return &e;
  }
  return nullptr;
}

void ToggleTracker::forget(uintptr_t start, size_t len) {
  uintptr_t end = start + len;
  if (end <= lo_ || start >= hi_) return;
  for (ToggleEntry &e : slots_)
    if (e.len && e.start < end && start < e.start + e.len) e.len = 0;  // free
}

}  // namespace mpk

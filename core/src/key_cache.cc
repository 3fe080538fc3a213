#include "key_cache.h"

namespace mpk {

void KeyCache::make_available(int key) {
  slots_[key] = Slot{};
  slots_[key].available = true;
}

int KeyCache::available_count() const {
  int n = 0;
  for (int k = 1; k < kHwKeys; ++k) n += slots_[k].available;
  return n;
}

int KeyCache::find_free() const {
  for (int k = 1; k < kHwKeys; ++k)
    if (slots_[k].available && !slots_[k].owner) return k;
  return 0;
}

int KeyCache::pick_victim(uint32_t exclude) const {
  int best = 0;
  for (int k = 1; k < kHwKeys; ++k) {
    const Slot &s = slots_[k];
    if (!s.available || !s.owner || s.pins || (exclude >> k & 1u)) continue;
    if (!best || s.lru < slots_[best].lru) best = k;
  }
  return best;
}

bool KeyCache::all_pinned() const { return !find_free() && !pick_victim(); }

void KeyCache::assign(int key, PageGroup *g, uint64_t tick) {
  slots_[key].owner = g;
  slots_[key].pins = 0;
  slots_[key].lru = tick;
}

void KeyCache::release(int key) {
  slots_[key].owner = nullptr;
  slots_[key].pins = 0;
}

int KeyCache::resident_count() const {
  int n = 0;
  for (int k = 1; k < kHwKeys; ++k) n += slots_[k].owner != nullptr;
  return n;
}

}  // namespace mpk

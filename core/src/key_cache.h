// key_cache.h - which page group holds which hardware key, and who to evict.
//
// Pure bookkeeping, no system calls: slots 1..15 mirror the hardware keys. A slot is `available`
// once the engine owns that key (allocated from the kernel, never given back while any page could
// carry it). An available slot is free or owned by one group. Owned slots carry a pin count (open
// domains: never evicted) and a last-use tick; eviction picks the least recently used unpinned one.
#pragma once

#include <cstdint>

#include "cpu.h"

namespace mpk {

struct PageGroup;

class KeyCache {
 public:
  void make_available(int key);
  bool available(int key) const { return slots_[key].available; }
  int available_count() const;

  int find_free() const;            // a free available slot, or 0
  int pick_victim(uint32_t exclude = 0) const;  // LRU owned unpinned slot not in exclude, or 0
  bool all_pinned() const;          // every owned slot pinned and none free

  void assign(int key, PageGroup *g, uint64_t tick);
  void release(int key);            // slot becomes free (still available)
  PageGroup *owner(int key) const { return slots_[key].owner; }
  void touch(int key, uint64_t tick) { slots_[key].lru = tick; }
  void pin(int key) { ++slots_[key].pins; }
  void unpin(int key) { if (slots_[key].pins) --slots_[key].pins; }
  uint32_t pins(int key) const { return slots_[key].pins; }
  int resident_count() const;

 private:
  struct Slot {
    bool available = false;
    PageGroup *owner = nullptr;
    uint32_t pins = 0;
    uint64_t lru = 0;
  };
  Slot slots_[kHwKeys];
};

}  // namespace mpk

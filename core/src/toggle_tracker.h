// toggle_tracker.h - which ranges the program mprotect()s, and how often.
//
// The legacy emulation promotes a range to a page group once the program has changed its
// permission `promote_after` times. The tracker remembers recent ranges in a fixed table (no
// allocation): an open-addressed window of kWays slots per hash, the least recently used slot
// of the window replaced when full. Losing an entry only delays a promotion. Not thread-safe
// (the engine's lock).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpk {

// Plain data without initializers, so that a table in zeroed memory (the metadata arena's, or a
// value-initialized ToggleTracker) is an empty table without writing 160 KiB at start-up: a zero
// len is a free slot, and touch() fills every field of a slot it takes.
struct ToggleEntry {
  uintptr_t start;
  size_t len;          // 0: free slot
  uint32_t count;      // successful mprotect calls on exactly this range
  int prot_union;      // every prot it was given (the ceiling a group would need)
  int16_t region;      // policy region matched when first seen (-1: defaults)
  bool never;          // a promotion failed for a reason that will not change (e.g. EACCES)
  uint8_t dissolves;   // its group was cut apart by a call on part of it (legacy.cc)
  uint64_t last;
};

class ToggleTracker {
 public:
  static constexpr uint32_t kSlots = 4096;
  static constexpr uint32_t kWays = 8;

  // The entry for exactly [start, start+len), created (count 0) if absent; *fresh says which.
  ToggleEntry &touch(uintptr_t start, size_t len, bool *fresh);
  // Forgets every entry that overlaps [start, start+len).
  void forget(uintptr_t start, size_t len);
  // An entry for a range that strictly contains [start, start+len), is toggled at least a quarter
  // as often (count * 4 >= count), and never had its group given back; nullptr if none. Scans
  // the table: for promotions only.
  const ToggleEntry *busier_container(uintptr_t start, size_t len, uint32_t count) const;

 private:
  static uint32_t hash(uintptr_t start, size_t len);
  ToggleEntry slots_[kSlots];
  uint64_t tick_ = 0;
  // Bounds of every entry ever made: forget() outside them costs nothing.
  uintptr_t lo_ = UINTPTR_MAX, hi_ = 0;
};

}  // namespace mpk

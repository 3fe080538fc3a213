// gates_table.h - the gated functions, by stub number (gates.cc fills it, the stubs read it).
#pragma once

#include <atomic>
#include <cstdint>

#include "gates.h"

namespace mpk::shim {

struct GateTarget {
  void *target = nullptr;  // the real function
  int16_t region = -1;     // the policy region its gate opens
  bool allocate = true;    // allocations inside it are the region's (a heap region's)
};

// Read-only outside gates_install(), which fills it (gates.cc).
struct alignas(4096) GateTable {
  int count = 0;
  // The keys of each policy region's isolated groups (legacy_region_key_table()): what a gate opens.
  const std::atomic<uint32_t> *region_keys = nullptr;
  GateTarget targets[kMaxGateStubs];
  uint16_t gate_of[kMaxGateStubs] = {};  // which policy gate made it (for the start-up report)
};
extern GateTable g_gate_table;

inline const GateTarget &gate_target(unsigned index) { return g_gate_table.targets[index]; }
inline uint32_t gate_region_keys(int region) {
  return g_gate_table.region_keys ? g_gate_table.region_keys[region].load(std::memory_order_acquire) : 0;
}

}  // namespace mpk::shim

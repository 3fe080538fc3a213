// gates_table.h - the gated functions, by stub number (gates.cc fills it, the stubs read it).
#pragma once

#include <cstdint>

namespace mpk::shim {

struct GateTarget {
  void *target = nullptr;  // the real function
  int16_t region = -1;     // the policy region its gate opens
  bool allocate = true;    // allocations inside it are the region's (a heap region's)
};

// Stub `index`'s target (the table is read-only outside gates_install()).
const GateTarget &gate_target(unsigned index);

}  // namespace mpk::shim

// policy_hooks.h - the TOML policy (config/policy.h) as the shim applies it.
#pragma once

#include "legacy.h"

namespace mpk::shim {

struct PolicyChoice {
  bool off = false;      // mode "off" (or a bad file with on_error = "passthrough"): do nothing
  int evict_rate = 100;
};

// Reads MPK_CONFIG (if set) and MPK_MODE, sets the engine's options and the log destination.
// A bad file ends the program with the file's error unless the file says on_error = "passthrough".
PolicyChoice policy_load();
// Moves the policy into the metadata arena (after engine_init) and returns the hooks that
// consult it.
LegacyHooks policy_legacy_hooks();
// Heap regions (heap = true): reserves their address space and starts matching allocations
// (after legacy_init). Does nothing without heap regions.
void policy_heap_start();
// Call gates ([[region.gate]]): patches the loaded modules (after policy_heap_start).
void policy_gates_start();
// MPK_LEARN=1: every isolated region is closed to every thread and audited, and violations are
// reported once per access site, thread name and kind of access (mpk-run --learn turns the log
// into a policy).
bool learning();
// A region's name from the policy (nullptr for -1).
const char *region_name(int region);

}  // namespace mpk::shim

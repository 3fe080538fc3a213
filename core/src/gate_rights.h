// gate_rights.h - the rights a call gate gives the calling thread (the shim's [[region.gate]]).
//
// A call into a gated function opens its region's keys read/write for the calling thread, in its
// own PKRU only, until the call returns (or a longjmp or an exception leaves it). Nested gates
// count per key: only the outermost entry and exit write the PKRU, one WRPKRU each. The state is
// thread-local (t_gate_keys, engine_state.h, and per-key depths here), so opening needs no lock,
// no shared write and no metadata access; the thread's own sync handler sees t_gate_keys through
// want_of() and keeps the keys open while a revocation of other rights rewrites the register.
// Async-signal-safe: a handler that enters and leaves gates restores what it changed.
#pragma once

#include <cstdint>

namespace mpk {

// Opens `keys` for the calling thread (each key's depth + 1). Returns the keys this call opened
// (their depth was 0).
uint32_t gate_open(uint32_t keys);
// Closes `keys` (each key's depth - 1); a key whose depth reaches 0 goes back to the right the
// state gives the thread.
void gate_close(uint32_t keys);
// The keys the calling thread holds through gates now.
uint32_t gate_keys();

}  // namespace mpk

// fast_path.h - rights changes on a resident group without the engine's lock.
//
// mprotect of a group's exact range (the shim), mpk_mprotect, mpk_begin and mpk_end on a group
// that holds a hardware key are served here: the key is found by hash (EngineState.by_start /
// by_vkey), its KeyLock taken with a single try (a held lock, a group that is not resident, or a
// change that needs the page table sends the call to the slow path, which gives the same result),
// the key's state and the caller's PKRU changed, and a revocation signals only the key's holders
// that hold more (sync_keys). No mutex, no system call unless another thread must be signalled,
// no scan of groups or threads, no shared counter. Two PKRU writes per call: the first opens the
// metadata for writing, the second closes it and sets the caller's new right on the key.
//
// Each function returns false when the slow path must serve the call; true with *rc the result
// (0 or -errno) otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine_state.h"

namespace mpk {

// The shim's emulated mprotect of exactly [start, start+len) (page-aligned, prot valid), when prot
// is within what the group's pages can express (legacy_fits).
// (mpk_mprotect, mpk_begin and mpk_end have theirs inside engine_mprotect, engine_begin and
// engine_end, defined in fast_path.cc.)
bool fast_legacy_mprotect(EngineState &st, uintptr_t start, size_t len, int prot, int *rc);
// After this thread rewrote its PKRU while a sync handler of its own ran (rec->acks moved): every
// key lowered to the state again, exact keys set from it.
void settle(EngineState &st, ThreadRecord *rec);

// The slow paths behind engine_begin, engine_end and engine_mprotect (engine.cc). Those three are
// defined in fast_path.cc, so that their fast case is one function with no frame for the slow.
int begin_slow(EngineState *st, int vkey, int prot);
int end_slow(EngineState *st, int vkey);
int mprotect_slow(EngineState *st, int vkey, int prot);

}  // namespace mpk

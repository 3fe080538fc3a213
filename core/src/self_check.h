// self_check.h - the kernel and CPU behaviour the engine relies on, checked before it starts.
//
// The sync handler and the lazy grants edit the PKRU saved in a signal frame and rely on sigreturn
// to restore it. That is the kernel's behaviour on the machines we know, not a promise: on AMD,
// WRPKRU(0) puts PKRU in its init state (XSTATE_BV[PKRU] clear), and some kernels restored PKRU=0
// (every key open) after a handler. So before the engine takes its first key for real it checks,
// on the calling thread with a signal sent to itself:
//   - the frame's XSAVE layout (frame_layout_problem) and that its PKRU slot holds the
//     interrupted PKRU;
//   - an edit of the frame's PKRU is what sigreturn restores;
//   - a WRPKRU made inside the handler is undone by sigreturn;
//   - a handler entered with PKRU in its init state (XSTATE_BV clear) can still set it.
// On simulated keys there is nothing of the kernel's to check.
#pragma once

namespace mpk {

// Null if everything holds; else a one-line reason. `sig` is a signal the caller owns for the
// moment (its handler is replaced and restored); `key` a key allocated to the engine.
const char *pkru_self_check(int sig, int key);

}  // namespace mpk

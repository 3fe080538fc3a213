// shim_sim_util.h - what the shim's threads tests on simulated keys (mpk_sim_shim_tests) read.
//
// The program is an ordinary one run under LD_PRELOAD=libmpk_shim.so with MPK_SIMULATE=1: it links
// nothing of libmpk. It reads
//   * its own simulated PKRU register inside the shim: t_sim_pkru is an initial-exec TLS variable
//     of libmpk_shim.so (core/src/key_backend.h); its offset in the library's TLS block is the
//     symbol's value in the library's .symtab, and dl_iterate_phdr gives each thread its block;
//   * the shim's statistics page (/dev/shm/libmpk-PID.stats, core/src/stats_page.h): counters,
//     and each emulated region's hardware key.
#pragma once

#include "../maps_perms.h"

#include <atomic>
#include <cstdint>
#include <string>

#include "stats_page.h"

namespace shimsim {

// The shim's statistics page of this process, or nullptr (no shim).
const mpk::StatsPage *stats();
// True when the shim runs here on simulated keys.
bool simulating();
uint64_t counter(const std::atomic<uint64_t> mpk::Stats::*which);
uint64_t counter(mpk::Hot which);

// The hardware key of the emulated region that starts at addr: > 0 resident, 0 in the page
// table, -1 not a region.
int region_key(const void *addr);

// The calling thread's simulated PKRU inside the shim; false (and a reason) if it cannot be found.
bool shim_pkru(uint32_t *out, std::string *why);
// Rights on key in a PKRU value: 0 none, 1 read, 2 read/write (core/src/cpu.h).
inline int pkru_rights(uint32_t pkru, int key) {
  uint32_t b = (pkru >> (2 * key)) & 3u;
  return (b & 1u) ? 0 : (b & 2u) ? 1 : 2;
}
// The calling thread's right on key, or -1 when the register cannot be read.
int own_rights(int key);
int rights_of(int prot);
const char *rights_name(int r);

// One pass of a spin loop: yields, and passes through an intercepted libc call where
// ThreadSanitizer delivers the signals it deferred.
void spin_pause();


}  // namespace shimsim

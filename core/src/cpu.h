// cpu.h - what the processor and kernel offer: PKU detection, the PKRU register, and where the
// kernel's signal frame keeps PKRU.
//
// PKRU holds two bits per key k: bit 2k access-disable (AD), bit 2k+1 write-disable (WD).
// RDPKRU/WRPKRU are user-mode instructions that touch only the calling thread's register.
#pragma once

#include <atomic>
#include <cstdint>

#include "key_backend.h"
#include "stats.h"

namespace mpk {

constexpr int kHwKeys = 16;  // key 0 is the default key; 1..15 can be allocated

// Rights a thread can hold on a key, in increasing order.
enum class Rights : uint8_t { kNone = 0, kRead = 1, kReadWrite = 2 };

inline uint32_t pkru_bits(int key, Rights r) {
  uint32_t v = r == Rights::kNone ? 1u : r == Rights::kRead ? 2u : 0u;  // none -> AD, read -> WD
  return v << (2 * key);
}
inline uint32_t pkru_mask(int key) { return 3u << (2 * key); }
inline uint32_t pkru_with(uint32_t pkru, int key, Rights r) {
  return (pkru & ~pkru_mask(key)) | pkru_bits(key, r);
}
inline Rights pkru_rights(uint32_t pkru, int key) {
  uint32_t b = (pkru >> (2 * key)) & 3u;
  return (b & 1u) ? Rights::kNone : (b & 2u) ? Rights::kRead : Rights::kReadWrite;
}

// The calling thread's PKRU: the register, or its simulation (key_backend.h). The fast paths look
// at the backend once (`sim`: simulated()) and count their PKRU writes themselves
// (wrpkru_count, bump_hot_call); everything else uses rdpkru() and wrpkru().
inline uint32_t rdpkru_on(bool sim) {
  if (sim) return t_sim_pkru;
  uint32_t eax, edx;
  asm volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
  return eax;
}
inline void wrpkru_uncounted(bool sim, uint32_t v) {
  if (sim) {
    t_sim_pkru = v;
    // A signal handler of this thread must see the write in program order, as with the register.
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return;
  }
  asm volatile(".byte 0x0f,0x01,0xef" : : "a"(v), "c"(0), "d"(0) : "memory");
}
inline void wrpkru_count(uint64_t n) { bump_hot(Hot::wrpkru, n); }
inline uint32_t rdpkru() { return rdpkru_on(simulated()); }
// Every write is counted (a per-thread counter: no shared cache line, no locked instruction).
inline void wrpkru(uint32_t v) {
  wrpkru_count(1);
  wrpkru_uncounted(simulated(), v);
}

struct CpuInfo {
  bool pku = false;       // CPUID.(7,0):ECX.PKU
  bool ospke = false;     // CPUID.(7,0):ECX.OSPKE: the kernel enabled CR4.PKE
  bool pkey_syscalls = false;  // pkey_alloc worked
  uint32_t pkru_xsave_offset = 0;  // CPUID.(0xD,9).EBX: PKRU's offset in the XSAVE area
};

// Probes once (CPUID and a real pkey_alloc/pkey_free pair). Async-signal-safe after first call.
const CpuInfo &cpu_info();
inline bool pkeys_usable() { const CpuInfo &c = cpu_info(); return c.pku && c.ospke && c.pkey_syscalls; }

}  // namespace mpk

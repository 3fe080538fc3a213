// shim_sim_util.cc - the shim's simulated register, statistics page and /proc readers.
#include "shim_sim_util.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "../../module_symbol.h"
#include "key_backend.h"
#include "stats_page_open.h"

namespace shimsim {

namespace {

constexpr const char *kPkruSymbol = "_ZN3mpk10t_sim_pkruE";  // mpk::t_sim_pkru

}  // namespace

const mpk::StatsPage *stats() { return mpk::own_stats_page(); }

bool simulating() {
  return stats() && stats()->active.load() && stats()->backend.load() == static_cast<uint32_t>(mpk::Backend::kSimulated);
}

uint64_t counter(const std::atomic<uint64_t> mpk::Stats::*which) {
  return stats() ? (stats()->counters.*which).load() : 0;
}

uint64_t counter(mpk::Hot which) { return stats() ? mpk::hot_total(stats()->hot, which) : 0; }

int region_key(const void *addr) {
  if (!stats()) return -1;
  auto a = reinterpret_cast<uint64_t>(addr);
  for (const mpk::RegionSlot &s : stats()->regions)
    if (s.used.load(std::memory_order_acquire) && s.start == a) return s.key.load();
  return -1;
}

bool shim_pkru(uint32_t *out, std::string *why) {
  // The block's address is fixed for the thread's life: look it up once per thread.
  thread_local uint32_t *reg = nullptr;
  if (!reg) {
    reg = static_cast<uint32_t *>(mpktest::module_symbol("libmpk_shim", kPkruSymbol, why));
    if (!reg) return false;
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  *out = *reinterpret_cast<volatile uint32_t *>(reg);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return true;
}

int own_rights(int key) {
  uint32_t v;
  std::string why;
  return shim_pkru(&v, &why) ? pkru_rights(v, key) : -1;
}

int rights_of(int prot) { return (prot & PROT_WRITE) ? 2 : (prot & PROT_READ) ? 1 : 0; }

const char *rights_name(int r) {
  switch (r) {
    case 0: return "NONE";
    case 1: return "READ";
    case 2: return "READ|WRITE";
    default: return "unreadable";
  }
}

void spin_pause() {
  sched_yield();
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
}


}  // namespace shimsim

// stats_page.h - the shim's counters and regions, readable by other processes while it runs.
//
// The shim publishes one page per process at /dev/shm/libmpk-<pid>.stats (mode 0600, removed at
// exit): a fixed layout holding the counters (stats.h) and a table of regions (page groups the
// shim made from the program's mappings). `mpk-stat PID` maps it read-only and prints the same
// JSON the shim writes at exit (MPK_STATS). Every field is an atomic or written before the slot is
// published, so a reader sees whole values; a reader may see a region list a moment old.
#pragma once

#include <atomic>
#include <cstdint>

#include "stats.h"

namespace mpk {

constexpr uint64_t kStatsMagic = 0x74617473'6b706d31ull;  // "1mpkstat"
constexpr uint32_t kStatsLayout = 5;                       // bumped when the layout changes
constexpr int kRegionSlots = 256;

// Aligned to cache lines: threads toggling different regions share none.
struct alignas(64) RegionSlot {
  std::atomic<uint32_t> used{0};
  char name[64] = {};
  char kind[16] = {};  // "emulate", "isolate", "isolate-audit"
  uint64_t start = 0;
  uint64_t len = 0;
  std::atomic<int32_t> key{0};
  std::atomic<int32_t> prot{0};
  std::atomic<int32_t> ceiling{0};
  std::atomic<uint64_t> toggles{0};
};

struct StatsPage {
  uint64_t magic = kStatsMagic;
  uint32_t layout = kStatsLayout;
  int32_t pid = 0;
  char version[16] = {};
  std::atomic<uint32_t> active{0};   // the shim runs with protection keys (either backend)
  std::atomic<int32_t> hw_keys{0};
  std::atomic<uint32_t> backend{0};  // key_backend.h: Backend
  char inactive_reason[96] = {};     // why protection keys are not used although the CPU has them
  Stats counters;
  HotSlot hot[kHotSlots];
  RegionSlot regions[kRegionSlots];
};

// The page in use: a static one until stats_page_share() succeeds.
extern constinit std::atomic<StatsPage *> g_page;
inline StatsPage &stats_page() { return *g_page.load(std::memory_order_acquire); }
// Moves the page (and the counters) into /dev/shm/libmpk-<pid>.stats. False if it cannot.
bool stats_page_share();
// Removes the shared file (at exit).
void stats_page_unshare();
// In a fork child: the parent's page is shared with it; the child gets a page of its own.
void stats_page_after_fork();

// Records why the engine does not use the CPU's protection keys (a failed self-check).
void note_inactive_reason(const char *why);

// Region table. claim() returns a slot index or -1 (table full: the region is not listed).
int region_claim(const char *name, const char *kind, uint64_t start, uint64_t len);
void region_update(int slot, int key, int prot, int ceiling);
// A toggle served for the slot's group: `toggles` is the group's count after it (the slot mirrors
// it, from 0 when claimed with the group).
void region_toggled(int slot, uint64_t toggles);
// Both for a toggle that changes only the permission; inline: the fast path calls it on every one.
// Plain stores of values the caller has: reading the slot back first (an increment, a look at
// the permission) cost the shim's emulated toggle just under 1 ns on this CPU.
inline void region_toggled_to(int slot, int prot, uint64_t toggles) {
  if (slot < 0) return;
  RegionSlot &s = stats_page().regions[slot];
  s.toggles.store(toggles, std::memory_order_relaxed);
  s.prot.store(prot, std::memory_order_relaxed);
}
void region_release(int slot);

// Renders a page as the shim's stats JSON. `extra(slot, buf, cap)` may append fields to each
// region object (it returns how many bytes it wrote); null for none. Returns the length.
using RegionExtra = int (*)(int slot, char *buf, int cap);
int stats_page_json(const StatsPage &page, char *buf, int cap, RegionExtra extra);

}  // namespace mpk

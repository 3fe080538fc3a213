#include "stats.h"

#include "key_backend.h"
#include "raw_log.h"
#include "sys.h"

namespace mpk {

namespace {
constinit Stats g_boot_stats;
}  // namespace
constinit std::atomic<Stats *> g_stats_at{&g_boot_stats};

namespace {
constinit HotSlot g_boot_hot[kHotSlots];
}  // namespace
constinit std::atomic<HotSlot *> g_hot_at{g_boot_hot};
constinit thread_local int t_hot_slot __attribute__((tls_model("initial-exec"))) = -1;
constinit thread_local HotSlot *t_hot __attribute__((tls_model("initial-exec"))) = nullptr;

int claim_hot_slot() {
  HotSlot *slots = g_hot_at.load(std::memory_order_acquire);
  int tid = sys::gettid();
  for (int i = 1; i < kHotSlots; ++i) {
    int32_t expected = 0;
    if (slots[i].owner.load(std::memory_order_relaxed) != 0) continue;
    if (slots[i].owner.compare_exchange_strong(expected, tid, std::memory_order_acq_rel)) {
      t_hot = &slots[i];
      return t_hot_slot = i;
    }
  }
  return t_hot_slot = 0;  // the shared slot
}

void release_hot_slot() {
  int s = t_hot_slot;
  if (s <= 0) return;
  t_hot_slot = -1;
  t_hot = nullptr;
  HotSlot *slots = g_hot_at.load(std::memory_order_acquire);
  // Ordering: the values move to slot 0 before the slot is zeroed; a reader in between counts
  // them twice, never zero times.
  for (int i = 0; i < kHotCount; ++i) {
    uint64_t v = slots[s].c[i].load(std::memory_order_relaxed);
    if (v) slots[0].c[i].fetch_add(v, std::memory_order_relaxed);
    slots[s].c[i].store(0, std::memory_order_relaxed);
  }
  slots[s].owner.store(0, std::memory_order_release);
}

int stats_json(char *buf, int cap, int groups, int resident_groups, int hw_keys) {
  int n = format_to(buf, cap,
                    "{\"version\":\"%s\",\"pid\":%d,\"backend\":\"%s\",\"groups\":%d,\"resident_groups\":%d,"
                    "\"hw_keys\":%d",
                    MPK_VERSION_STRING, sys::getpid(), backend_name(g_backend), groups, resident_groups, hw_keys);
#define MPK_FORMAT_COUNTER(name, doc) \
  n += format_to(buf + n, cap - n, ",\"" #name "\":%lu", (unsigned long)stats().name.load(std::memory_order_relaxed));
  MPK_COUNTERS(MPK_FORMAT_COUNTER)
#undef MPK_FORMAT_COUNTER
#define MPK_FORMAT_HOT(name, doc) n += format_to(buf + n, cap - n, ",\"" #name "\":%lu", (unsigned long)hot_total(Hot::name));
  MPK_HOT_COUNTERS(MPK_FORMAT_HOT)
#undef MPK_FORMAT_HOT
  n += format_to(buf + n, cap - n, "}");
  return n;
}

}  // namespace mpk

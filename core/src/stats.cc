#include "stats.h"

#include "raw_log.h"
#include "sys.h"

namespace mpk {

namespace {
constinit Stats g_boot_stats;
}  // namespace
constinit std::atomic<Stats *> g_stats_at{&g_boot_stats};

int stats_json(char *buf, int cap, int groups, int resident_groups, int hw_keys) {
  int n = format_to(buf, cap, "{\"version\":\"%s\",\"pid\":%d,\"groups\":%d,\"resident_groups\":%d,\"hw_keys\":%d",
                    MPK_VERSION_STRING, sys::getpid(), groups, resident_groups, hw_keys);
#define MPK_FORMAT_COUNTER(name, doc) \
  n += format_to(buf + n, cap - n, ",\"" #name "\":%lu", (unsigned long)stats().name.load(std::memory_order_relaxed));
  MPK_COUNTERS(MPK_FORMAT_COUNTER)
#undef MPK_FORMAT_COUNTER
  n += format_to(buf + n, cap - n, "}");
  return n;
}

}  // namespace mpk

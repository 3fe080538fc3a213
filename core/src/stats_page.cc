#include "stats_page.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cstring>

#include "key_backend.h"
#include "raw_log.h"
#include "sys.h"

namespace mpk {

namespace {

constinit StatsPage g_static_page;

}  // namespace

constinit std::atomic<StatsPage *> g_page{&g_static_page};

namespace {

constinit char g_shared_path[64] = {};

void path_for(int pid, char *buf, int cap) { format_to(buf, cap, "/dev/shm/libmpk-%d.stats", pid); }

// The new file is all zeros: only the parts of src that are not are written, so the pages of a
// mostly empty table (256 region slots, the per-thread counters) are not faulted in at start-up.
void copy_nonzero(void *dst, const void *src, size_t n) {
  constexpr size_t kChunk = 256;
  auto *d = static_cast<unsigned char *>(dst);
  const auto *s = static_cast<const unsigned char *>(src);
  for (size_t at = 0; at < n; at += kChunk) {
    size_t len = n - at < kChunk ? n - at : kChunk;
    bool zero = true;
    for (size_t i = 0; i < len && zero; ++i) zero = s[at + i] == 0;
    if (!zero) std::memcpy(d + at, s + at, len);
  }
}

}  // namespace

bool stats_page_share() {
  int pid = sys::getpid();
  char path[64];
  path_for(pid, path, sizeof path);
  sys::raw(SYS_unlink, (long)path);  // a file left by an earlier process with this pid
  int fd = static_cast<int>(sys::raw(SYS_openat, AT_FDCWD, (long)path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd < 0) return false;
  size_t size = (sizeof(StatsPage) + 4095) & ~size_t{4095};
  bool ok = sys::raw(SYS_ftruncate, fd, (long)size) == 0;
  void *p = ok ? sys::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : nullptr;
  sys::close(fd);
  if (!ok || sys::mmap_failed(p)) {
    sys::raw(SYS_unlink, (long)path);
    return false;
  }
  auto *page = static_cast<StatsPage *>(p);
  // Ordering: the current page (counters, regions) is copied first, then the pointers move; bumps
  // in between are the only ones lost (start-up runs before the program's threads; a fork child
  // has one thread).
  copy_nonzero(page, &stats_page(), sizeof(StatsPage));
  copy_nonzero(page->hot, g_hot_at.load(), sizeof page->hot);
  page->magic = kStatsMagic;
  page->layout = kStatsLayout;
  page->pid = pid;
  std::memcpy(page->version, MPK_VERSION_STRING, sizeof MPK_VERSION_STRING < sizeof page->version ? sizeof MPK_VERSION_STRING : sizeof page->version - 1);
  g_stats_at.store(&page->counters, std::memory_order_release);
  g_hot_at.store(page->hot, std::memory_order_release);
  if (t_hot_slot > 0) t_hot = &page->hot[t_hot_slot];
  g_page.store(page, std::memory_order_release);
  std::memcpy(g_shared_path, path, sizeof g_shared_path);
  return true;
}

void stats_page_unshare() {
  if (g_shared_path[0] && stats_page().pid == sys::getpid()) sys::raw(SYS_unlink, (long)g_shared_path);
}

void stats_page_after_fork() {
  if (!g_shared_path[0]) return;
  g_shared_path[0] = '\0';
  if (!stats_page_share()) {
    // No file: counters go back to a private block, starting from the parent's values.
    static constinit StatsPage child_page;
    std::memcpy(static_cast<void *>(&child_page), static_cast<const void *>(&stats_page()), sizeof child_page);
    std::memcpy(static_cast<void *>(child_page.hot), static_cast<const void *>(g_hot_at.load()), sizeof child_page.hot);
    child_page.pid = sys::getpid();
    g_stats_at.store(&child_page.counters, std::memory_order_release);
    g_hot_at.store(child_page.hot, std::memory_order_release);
    if (t_hot_slot > 0) t_hot = &child_page.hot[t_hot_slot];
    g_page.store(&child_page, std::memory_order_release);
  }
}

void note_inactive_reason(const char *why) {
  StatsPage &p = stats_page();
  std::strncpy(p.inactive_reason, why, sizeof p.inactive_reason - 1);
}

int region_claim(const char *name, const char *kind, uint64_t start, uint64_t len) {
  StatsPage &page = stats_page();
  for (int i = 0; i < kRegionSlots; ++i) {
    RegionSlot &s = page.regions[i];
    if (s.used.load(std::memory_order_relaxed)) continue;
    std::strncpy(s.name, name ? name : "auto", sizeof s.name - 1);
    std::strncpy(s.kind, kind, sizeof s.kind - 1);
    s.start = start;
    s.len = len;
    s.key.store(0);
    s.toggles.store(0);
    s.used.store(1, std::memory_order_release);  // published last: a reader sees a whole slot
    return i;
  }
  return -1;
}

void region_update(int slot, int key, int prot, int ceiling) {
  if (slot < 0) return;
  RegionSlot &s = stats_page().regions[slot];
  constexpr auto rel = std::memory_order_relaxed;
  // Only what changed is written: a toggled region's key and ceiling stay put.
  if (s.key.load(rel) != key) s.key.store(key, rel);
  if (s.prot.load(rel) != prot) s.prot.store(prot, rel);
  if (s.ceiling.load(rel) != ceiling) s.ceiling.store(ceiling, rel);
}

// Stored by the thread that toggles the region, under its key's lock: a plain store.
void region_toggled(int slot, uint64_t toggles) {
  if (slot < 0) return;
  stats_page().regions[slot].toggles.store(toggles, std::memory_order_relaxed);
}

void region_release(int slot) {
  if (slot >= 0) stats_page().regions[slot].used.store(0, std::memory_order_release);
}

int stats_page_json(const StatsPage &page, char *buf, int cap, RegionExtra extra) {
  const Stats &c = page.counters;
  auto u = [](const std::atomic<uint64_t> &x) { return (unsigned long)x.load(std::memory_order_relaxed); };
  int groups = 0, resident = 0;
  for (const RegionSlot &s : page.regions) {
    if (!s.used.load(std::memory_order_acquire)) continue;
    ++groups;
    resident += s.key.load(std::memory_order_relaxed) != 0;
  }
  // This process's own page: its hot counters are wherever g_hot_at points (the boot table until
  // the page is shared); another process's page (mpk-stat) holds its own.
  const HotSlot *hot_slots = &page == &stats_page() ? g_hot_at.load(std::memory_order_acquire) : page.hot;
  auto hot = [&](Hot h) { return (unsigned long)hot_total(hot_slots, h); };
  int n = format_to(buf, cap,
                    "{\"version\":\"%s\",\"pid\":%d,\"active\":%s,\"backend\":\"%s\",\"inactive_reason\":\"%s\",\"wrpkru\":%lu,"
                    "\"mprotect_calls\":%lu,\"mprotect_emulated\":%lu,"
                    "\"mprotect_passthrough\":%lu,\"groups\":%d,\"resident_groups\":%d,\"hw_keys\":%d,"
                    "\"evictions\":%lu,\"lazy_grants\":%lu,\"revocation_signals\":%lu,\"efault_repairs\":%lu,"
                    "\"violations\":%lu,\"promotions\":%lu,\"dissolves\":%lu,\"exceptions\":%lu,\"sync_fallbacks\":%lu,"
                    "\"threads_registered\":%lu,\"region_allocs\":%lu,\"region_frees\":%lu,\"region_unserved\":%lu,"
                    "\"regions\":[",
                    page.version[0] ? page.version : MPK_VERSION_STRING, page.pid ? page.pid : sys::getpid(), page.active.load() ? "true" : "false",
                    backend_name(static_cast<Backend>(page.backend.load())), page.inactive_reason, hot(Hot::wrpkru), hot(Hot::legacy_calls),
                    hot(Hot::legacy_emulated), u(c.legacy_passthrough), groups, resident, page.hw_keys.load(),
                    u(c.evictions), u(c.lazy_grants), u(c.revocation_signals), u(c.efault_repairs),
                    u(c.violations), u(c.promotions), u(c.dissolves), u(c.exceptions), u(c.sync_fallbacks), u(c.threads_registered),
                    u(c.region_allocs), u(c.region_frees), u(c.region_unserved));
  int listed = 0;
  for (int i = 0; i < kRegionSlots && n < cap - 512; ++i) {
    const RegionSlot &s = page.regions[i];
    if (!s.used.load(std::memory_order_acquire)) continue;
    n += format_to(buf + n, cap - n,
                   "%s{\"name\":\"%s\",\"kind\":\"%s\",\"ranges\":[[\"0x%lx\",%lu]],\"key\":%d,\"prot\":%d,"
                   "\"ceiling\":%d,\"toggles\":%lu",
                   listed++ ? "," : "", s.name, s.kind, (unsigned long)s.start, (unsigned long)s.len, s.key.load(),
                   s.prot.load(), s.ceiling.load(), u(s.toggles));
    if (extra) n += extra(i, buf + n, cap - n - 4);
    n += format_to(buf + n, cap - n, "}");
  }
  n += format_to(buf + n, cap - n, "]}");
  return n;
}

}  // namespace mpk

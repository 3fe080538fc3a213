// legacy.h - emulating the program's own mprotect calls with protection keys (the shim's speed path).
//
// A range the program mprotect()s repeatedly becomes a page group: its pages are tagged with a
// hardware key at the group's ceiling (the union of every permission the program gave the range),
// and from then on an mprotect of exactly that range is a PKRU update (engine_core.cc:
// set_group_prot). Anything else that touches a group's pages (a different or straddling range, a
// permission beyond the ceiling, munmap, mremap, MAP_FIXED, pkey_mprotect) first dissolves the
// group, putting its pages back on key 0 at exactly the permission the program last set, and then
// goes to the kernel: return values and errno are the kernel's own.
//
// All functions return what the system call would (0 / -errno, or the address) and are safe to
// call before the engine is ready (they then only make the system call).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mpk {

// What the policy says about a range, asked once when the range is first mprotect()ed.
// Policy regions are numbered 0..kMaxPolicyRegions-1 (config/policy.h: kMaxRegions).
constexpr int kMaxPolicyRegions = 64;

struct RangeRule {
  enum Action : uint8_t { kEmulate, kPassthrough, kIsolate } action = kEmulate;
  bool audit = false;      // isolate: log violations and let them through
  int promote_after = 2;   // successful mprotect calls on the range before it becomes a group
  bool exec_exact = false; // keep execute rights exact (a system call per RW<->RX toggle)
  bool eager = false;      // grants reach every thread before mprotect returns (not on first use)
  bool thread_toggles = false;  // isolate: mprotect changes the calling thread's right only
  bool heap = false;       // isolate: the region's memory is its heap's (region_heap.h)
};

struct LegacyHooks {
  // Region index for a range (-1: the defaults), and the rule for an index (-1 included). The
  // matcher runs under the engine's lock, at most once per new range; it may read /proc and
  // unwind the stack but must not call mmap/mprotect/munmap through the interposed symbols.
  // At mmap (flags and the file's path known; only when has_isolation) or at the first mprotect
  // (flags -1, path nullptr: the matcher finds them if it needs them).
  int (*match)(uintptr_t start, size_t len, int prot, int flags, const char *path) = nullptr;
  bool has_isolation = false;
  RangeRule (*rule)(int region) = nullptr;
  const char *(*region_name)(int region) = nullptr;
};

struct EngineState;
struct Section;
struct PageGroup;

// Starts the emulation (after engine_init succeeded). Returns 0 or -errno.
int legacy_init(const LegacyHooks &hooks);

int legacy_mprotect(void *addr, size_t len, int prot);
int legacy_munmap(void *addr, size_t len);
// Isolated regions with thread toggles (a JIT's code area) also take the matching mappings that
// exist when the shim starts: a library may reserve its code area in a static constructor that
// runs before the shim's (SpiderMonkey does, through gjs). Call once, after legacy_init.
void legacy_adopt_existing();
void *legacy_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *legacy_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);
int legacy_pkey_mprotect(void *addr, size_t len, int prot, int pkey);

// A region heap's new pages [p, p+len) (fresh, PROT_NONE, nobody else knows them): with g null
// they become the region's isolated group, else they join g at read/write. Returns the group, or
// nullptr (no key, or no memory for metadata). Caller: inside Section s, holding the lock.
PageGroup *legacy_heap_pages(EngineState &st, Section &s, PageGroup *g, int region, void *p, size_t len);

// The hardware keys of each policy region's isolated groups (kMaxPolicyRegions entries, in the
// arena; nullptr before legacy_init): what a call gate of a region opens. Read them lock-free.
const std::atomic<uint32_t> *legacy_region_key_table();

// The program allocated a protection key of its own (pkey_alloc succeeded).
void legacy_note_program_key();
// Is pkey one of the engine's own keys (groups or metadata)?
bool legacy_owns_key(int pkey);

// Before a system call that copies to or from [p, p+len): brings this thread's PKRU up to the
// rights the state gives it on the groups the buffer touches, if a grant has not reached it yet
// (a kernel copy stops at the first page it may not touch: a short count, or EFAULT). Cheap when
// nothing is pending. True if it changed the PKRU.
bool legacy_catch_up(const void *p, size_t len);

// True when [start, start+len) holds pages of a resident group this thread may access more than
// its PKRU lets it now; then the thread's PKRU has been updated (the EFAULT repair of a system
// call: the caller retries it).
bool legacy_repair_efault(const void *start, size_t len);

// Counters and the group list as one JSON object (the shim's MPK_STATS). Returns its length.
int legacy_stats_json(char *buf, int cap);

}  // namespace mpk

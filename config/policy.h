// policy.h - the shim's policy: what a TOML file (MPK_CONFIG) says, as plain data.
//
// A Policy is fixed-size data with no pointers into the heap (char buffers and arrays only), so
// the shim can copy it into its own arena with memcpy. load_policy() reads and validates a file
// once at start-up and may allocate while it does. Everything else declared here runs on the
// shim's interposed paths: it never allocates, locks or throws, and glob_match() and
// thread_right() are async-signal-safe. match_region() is async-signal-safe too unless a region
// it reaches has a caller criterion (that unwinds the stack: see caller.h).
//
// The schema is documented in config/README.md; config/examples/ has annotated files.
#pragma once

#include <cstddef>
#include <cstdint>

#include "caller.h"

namespace mpk::cfg {

inline constexpr int kMaxRegions = 64;
inline constexpr int kMaxHeapRegions = 16;    // of them, heap = true
inline constexpr int kMaxGates = 16;          // [[region.gate]] tables, all regions together
inline constexpr int kMaxGateSymbols = 16;    // symbol globs per gate
inline constexpr int kMaxThreadRules = 16;    // per region
inline constexpr size_t kNameMax = 63;        // region name, thread-name glob (characters)
inline constexpr size_t kPathMax = 255;       // path glob, log path
inline constexpr size_t kStartGlobMax = 127;  // start-routine symbol glob
inline constexpr size_t kSourcePathMax = 4095;

enum class Mode : uint8_t { kEnforce, kAudit, kOff };
enum class OnError : uint8_t { kFail, kPassthrough };
enum class Action : uint8_t { kEmulate, kIsolate, kPassthrough };
enum class ExecMode : uint8_t { kCeiling, kExact };
enum class Grants : uint8_t { kLazy, kEager };
// What the program's mprotect on an isolated region does: goes to the kernel (process-wide, the
// default), or changes the calling thread's right only (a JIT's code area: "thread").
enum class MprotectMode : uint8_t { kKernel, kThread };

// A thread's right on an isolated region; ordered, so a larger value is more access.
enum Right : int { kRightNone = 0, kRightRead = 1, kRightReadWrite = 2 };

// Which match criteria a region gives (Region::match).
enum MatchBit : uint32_t {
  kMatchPath = 1u << 0,
  kMatchMinSize = 1u << 1,
  kMatchMaxSize = 1u << 2,
  kMatchProt = 1u << 3,
  kMatchAddress = 1u << 4,
  kMatchCaller = 1u << 5,
  kMatchAnonymous = 1u << 6,
  kMatchShared = 1u << 7,
  kMatchModule = 1u << 8,
};

struct Settings {
  Mode mode = Mode::kEnforce;
  OnError on_error = OnError::kFail;
  int key_budget = 13;     // 1..14
  int evict_rate = 100;    // 0..100
  int promote_after = 2;   // 1..1000
  int sync_signal = 0;     // a real-time signal number; 0 only before init_defaults()
  bool log_to_stderr = true;
  char log_path[kPathMax + 1] = {};  // when !log_to_stderr
};

struct ThreadRule {
  char name[kNameMax + 1] = {};    // thread-name (comm) glob; "" = any name
  char start[kStartGlobMax + 1] = {};  // start-routine symbol glob; "" = any start routine
  int right = kRightNone;
};

struct Region {
  char name[kNameMax + 1] = {};
  uint32_t line = 0;      // line of the region's table in the source file (for reports)

  // Match: every criterion given in `match` must hold.
  uint32_t match = 0;
  char path[kPathMax + 1] = {};  // glob on the file path; '/' is special, "**" crosses it
  uint64_t min_size = 0;
  uint64_t max_size = 0;
  int prot = 0;                  // PROT_READ|PROT_WRITE|PROT_EXEC bits, matched exactly
  uint64_t addr_lo = 0;          // the whole mapping lies in [addr_lo, addr_hi)
  uint64_t addr_hi = 0;
  bool anonymous = false;
  bool shared = false;
  CallerPattern caller;
  char module[kPathMax + 1] = {};  // heap: basename glob of the module that called the allocator

  // Where the region's memory comes from: mappings the program makes (false), or its allocations
  // (true: malloc and friends, matched by size, module and caller; served from the region's own
  // isolated heap).
  bool heap = false;

  // Action.
  Action action = Action::kEmulate;
  int promote_after = 2;              // emulate: the global value unless the region overrides it
  ExecMode exec = ExecMode::kCeiling;
  Grants grants = Grants::kLazy;
  MprotectMode mprotect = MprotectMode::kKernel;  // isolate only

  // Isolate only.
  int gate_count = 0;                 // its [[region.gate]] tables (in Policy::gates)
  int default_right = kRightNone;
  Mode mode = Mode::kEnforce;         // kEnforce or kAudit: the region's `enforce`, else the global mode
  int thread_rule_count = 0;
  ThreadRule threads[kMaxThreadRules];
};

// A call gate: calls from other modules into the named functions of `module` open the region
// for the calling thread until they return.
struct Gate {
  int region = -1;
  uint32_t line = 0;
  char module[kPathMax + 1] = {};                          // basename glob of the defining module
  int symbol_count = 0;
  char symbols[kMaxGateSymbols][kStartGlobMax + 1] = {};  // globs on exported function names
  bool allocate = true;  // a heap region takes what is allocated inside these calls
};

struct Policy {
  Settings settings;
  char source[kSourcePathMax + 1] = {};  // the file it was loaded from; "" for the defaults
  int gate_count = 0;
  Gate gates[kMaxGates];
  int region_count = 0;
  // Only the first region_count are meaningful (and last: used_bytes() covers them).
  Region regions[kMaxRegions];

  // The bytes that hold the policy: everything before the regions, and the regions in use.
  size_t used_bytes() const { return offsetof(Policy, regions) + static_cast<size_t>(region_count) * sizeof(Region); }
};

// What the shim knows about a mapping when it is created (mmap) or first mprotect'ed.
inline constexpr int kFlagsUnknown = -1;
struct MappingInfo {
  uint64_t addr = 0;
  uint64_t len = 0;
  int prot = 0;                  // PROT_* of the mmap, or of the first mprotect
  int flags = kFlagsUnknown;     // MAP_* flags of the mmap; anonymous/shared criteria need them
  const char *path = nullptr;    // the mapped file's path; nullptr when anonymous or unknown
  uintptr_t skip_module_base = 0;  // caller criteria ignore frames of this module (0: none)
};

// Resets *out to what applies with no configuration file: no regions, mode enforce, on_error
// fail, key_budget 13, evict_rate 100, promote_after 2, sync signal SIGRTMAX-2, log to stderr.
void init_defaults(Policy *out);

// Reads and validates the TOML file at `path` into *out. On failure returns false, writes
// "FILE:LINE:COLUMN: message" (or "FILE: message" when there is no position) into err, and
// leaves *out at the defaults except settings.on_error, which is the file's own value when it
// can be read: from the parsed document when the file is valid TOML, else from a plain
// `on_error = "passthrough"` line before the first table header. So the caller can honour
// on_error even for a file that does not parse.
bool load_policy(const char *path, Policy *out, char *err, size_t err_len);

// The same for `len` bytes of policy text already in memory (not NUL-terminated); `name` stands
// for the file in messages and becomes Policy::source. load_policy() reads the file and calls
// this, so both accept and reject exactly the same text. Any bytes are safe to pass: whatever
// they are, the result is a Policy or an error message, and text over 1 MiB is refused as a file
// that large would be.
bool load_policy_text(const char *name, const char *text, size_t len, Policy *out, char *err,
                      size_t err_len);

// The first mapping region (heap regions are skipped), in file order, whose criteria all hold for
// the mapping; nullptr if none. Caller criteria are evaluated last, and only for a region whose
// other criteria all hold.
const Region *match_region(const Policy &policy, const MappingInfo &info);

// The criteria of one region, without the first-match scan.
bool region_matches(const Region &region, const MappingInfo &info);

// Shell-style glob: '*' any run, '?' one character, "[abc]" "[a-z]" "[!a-z]" ("[^...]" too)
// a class, '\' escapes the next character. With slash_special, '*', '?' and classes never match
// '/', "**" matches across '/', and "/**/" (or a leading "**/") also matches a single '/'.
// Without it, "**" is the same as '*'. Patterns longer than kGlobMaxPattern bytes never match.
// No allocation, no recursion, time O(|pattern| x |s|): async-signal-safe.
inline constexpr size_t kGlobMaxPattern = 511;
bool glob_match(const char *pattern, const char *s, bool slash_special);

// The right a thread has on an isolated region: the first rule whose criteria all hold (a rule's
// name glob against thread_name, its start glob against start_symbol; a nullptr argument holds
// for no glob), else the region's default. Async-signal-safe.
int thread_right(const Region &region, const char *thread_name, const char *start_symbol);

// Names for messages and summaries.
const char *mode_name(Mode m);
const char *on_error_name(OnError e);
const char *action_name(Action a);
const char *exec_name(ExecMode e);
const char *grants_name(Grants g);
const char *mprotect_mode_name(MprotectMode m);
const char *right_name(int right);
// "rwx", "rw-", ... or "none" into buf (at least 5 bytes).
const char *prot_string(int prot, char *buf);

}  // namespace mpk::cfg

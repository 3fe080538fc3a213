// program.h - one generated test program: threads, regions, and operations in a strict global order.
//
// Every address in a program is a byte offset from the base of the address-space reservation
// (area.h), never an absolute address, so a program and its outcome log read the same in every
// process. A program is built by generate_program() from a seed alone; it carries no state of its
// own execution.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mpkdiff {

constexpr uint64_t kPage = 4096;
// Pages of the reservation a program may use. Generated ranges never reach past kUsablePages,
// so nothing a program does can touch memory outside the reservation.
constexpr uint32_t kAreaPages = 512;
constexpr uint32_t kUsablePages = 480;
// mremap moves go to fixed slots above this page; the regions themselves are laid out below it.
constexpr uint32_t kMoveZonePage = 200;
constexpr uint32_t kMoveSlotPages = 64;
constexpr uint32_t kMaxRegionGrowthPages = 40;  // an mremap never asks for more than this

enum class RegionKind : uint8_t {
  kAnonPrivate,
  kAnonShared,
  kFileSharedRw,   // MAP_SHARED of a file opened O_RDWR
  kFilePrivateRo,  // MAP_PRIVATE of a file opened O_RDONLY: may still be made writable (copy on write)
  kFileSharedRo,   // MAP_SHARED of a file opened O_RDONLY: PROT_WRITE is refused with EACCES
};

struct RegionSpec {
  RegionKind kind = RegionKind::kAnonPrivate;
  uint32_t first_page = 0;  // page index in the reservation
  uint32_t pages = 1;
  int prot = 0;             // protection after set-up
  uint32_t file_pages = 0;  // file kinds: file size; when < pages, the tail is past EOF (SIGBUS)
};

enum class OpKind : uint8_t {
  kMprotect,
  kMunmap,
  kMremap,
  kMmapFixed,   // anonymous mmap with MAP_FIXED or MAP_FIXED_NOREPLACE
  kProbeRead,   // one-byte load in user mode
  kProbeWrite,  // one-byte store in user mode
  kSysRead,     // read() from a pipe into the range: the kernel writes user memory
  kSysWrite,    // write() from the range into a pipe: the kernel reads user memory
  kFork,        // the child probes one byte and reports back through a pipe
  kSigmask,     // block (or unblock) every signal but SIGSEGV/SIGBUS in the executing thread
};

struct Op {
  OpKind kind = OpKind::kProbeRead;
  uint8_t thread = 0;     // 0 is the main thread
  uint64_t addr = 0;      // offset in the reservation, bytes; unaligned on purpose for some ops
  uint64_t len = 0;       // bytes
  int prot = 0;
  int flags = 0;          // mmap / mremap flags
  uint64_t new_len = 0;   // mremap
  uint64_t new_addr = 0;  // mremap with MREMAP_FIXED: target offset in the reservation
  uint8_t value = 0;      // byte a write probe stores
  bool write = false;     // kFork: the child stores rather than loads; kSigmask: block (else unblock)
  const char *note = "";  // why the generator chose this op ("hot", "straddle", ...), for traces
};

// What a program mostly does. kClassic: the op mix described in README.md. kSubRange: ranges
// protected whole again and again (so that they become page groups), interleaved with
// protections of parts of them (one page, a prefix, a suffix, a middle run, a part of the last
// part) and whole again, each step followed by probes in and around the part; and the pattern of
// Ruby's YJIT (one page read/write, a store, the whole area or each of its halves read/exec).
enum class ProgramKind : uint8_t { kClassic, kSubRange };

// Which kinds `generate_program` makes: kMixed draws each seed's kind from the seed (a draw of
// its own, so a classic program is the same whether or not other kinds exist); the others force
// one kind for every seed. A seed's sub-range program is the same whether drawn or forced.
enum class KindChoice : uint8_t { kMixed, kClassic, kSubRange };

struct Program {
  uint64_t seed = 0;
  ProgramKind kind = ProgramKind::kClassic;
  int threads = 1;
  std::vector<RegionSpec> regions;
  std::vector<Op> ops;
};

struct GeneratorLimits {
  uint32_t min_ops = 20;
  uint32_t max_ops = 200;
  KindChoice kinds = KindChoice::kMixed;
};

Program generate_program(uint64_t seed, const GeneratorLimits &limits);
ProgramKind program_kind(uint64_t seed, KindChoice kinds);
const char *kind_name(ProgramKind kind);
const char *kind_choice_name(KindChoice kinds);

// Text of an op without its outcome, e.g. "t2 mprotect p5..p8 (3p) r [hot]".
std::string describe_op(const Op &op);
std::string describe_region(int index, const RegionSpec &r);
std::string prot_name(int prot);
const char *kind_name(RegionKind kind);

}  // namespace mpkdiff

// program_generator.cc - builds a Program from a seed.
//
// The generator keeps a rough model of which region owns each page so that most ops hit mapped
// memory, and a few "hot" ranges that it mprotects again and again, exactly, toggling between two
// protections from varying threads: the pattern the shim turns into page groups. The model is
// only a guide for choosing ops; what the ops actually do is whatever the kernel does natively,
// and the comparison is against that.
//
// Sub-range programs (ProgramKind::kSubRange, about a quarter of the seeds) keep the classic op
// mix for a third of their ops and spend the rest on "nests": a range protected whole again and
// again, and parts of it protected in between; or a range used the way Ruby's YJIT uses its code
// area. Whether a seed is classic is decided by a PRNG of its own, so classic programs are the
// same as before sub-range programs existed.
#include <sys/mman.h>

#include <algorithm>

#include "prng.h"
#include "program.h"

namespace mpkdiff {
namespace {

constexpr int kNone = PROT_NONE;
constexpr int kR = PROT_READ;
constexpr int kW = PROT_WRITE;
constexpr int kX = PROT_EXEC;
constexpr int kRW = PROT_READ | PROT_WRITE;
constexpr int kRX = PROT_READ | PROT_EXEC;
constexpr int kRWX = PROT_READ | PROT_WRITE | PROT_EXEC;

struct Range {
  uint32_t page = 0;
  uint32_t pages = 0;
  uint32_t end() const { return page + pages; }
};

struct HotRange {
  Range range;
  int prot_a, prot_b;
  bool next_is_b = true;
  int last_thread = 0;
};

// Protection pairs a hot range toggles between. Grants and revocations of every size appear, and
// a few pairs involve execute, which keys cannot express.
constexpr int kHotPairs[][2] = {{kRW, kR},   {kRW, kNone}, {kR, kNone},  {kNone, kRW}, {kR, kRW},
                                {kRW, kR},   {kRW, kNone}, {kRW, kRX},   {kRWX, kR},   {kRW, kRWX},
                                {kRX, kNone}};
// Protections for one-off mprotects; execute-only and write-only are rare.
constexpr int kProts[] = {kNone, kNone, kR, kR, kR, kRW, kRW, kRW, kRW, kRX, kRWX};
constexpr int kRareProts[] = {kX, kW, kRWX, kX | kW};
constexpr uint32_t kProbeOffsets[] = {0, 1, 2048, 4095};

// A nest: a range protected whole (toggling between two protections) and in parts.
struct Nest {
  Range whole;
  bool jit = false;     // the YJIT pattern rather than random parts
  bool halves = false;  // jit: the two halves are made executable one after the other
  int prot_a = kRW, prot_b = kR;
  bool next_is_b = false;
  uint32_t whole_calls = 0;
  Range part;           // the last part protected (parts of parts come from it)
  uint32_t frontier = 0;  // jit: pages of each half written so far (the next page to write)
  uint8_t jit_thread = 0;
};

// Protections a nest's whole range toggles between.
constexpr int kNestPairs[][2] = {{kRW, kR}, {kRW, kRX}, {kR, kRW}, {kRX, kRW},
                                 {kRW, kNone}, {kRWX, kR}, {kR, kNone}, {kRW, kRWX}};
// Protections for parts; execute-only and write-only come from kRareProts now and then.
constexpr int kPartProts[] = {kNone, kNone, kR, kR, kRW, kRW, kRW, kRX, kRWX};

class Generator {
 public:
  Generator(uint64_t seed, const GeneratorLimits &limits) : rng_(seed), limits_(limits) {
    program_.seed = seed;
    std::fill(std::begin(owner_), std::end(owner_), int8_t{-1});
  }

  Program build() {
    program_.kind = program_kind(program_.seed, limits_.kinds);
    lay_out_regions();
    uint32_t lo = std::min(limits_.min_ops, limits_.max_ops);
    uint32_t n = rng_.between(lo, limits_.max_ops);
    if (program_.kind == ProgramKind::kClassic) {
      for (uint32_t i = 0; i < n; ++i) add_op();
    } else {
      max_ops_ = n;  // a nest step adds several ops; the program stops at n all the same
      while (program_.ops.size() < n) add_sub_range_op();
    }
    return std::move(program_);
  }

 private:
  void lay_out_regions() {
    uint32_t roll = rng_.below(100);
    program_.threads = roll < 20 ? 1 : roll < 50 ? 2 : roll < 75 ? 3 : 4;
    int regions = 1 + static_cast<int>(rng_.below(4));
    uint32_t cursor = 1;  // page 0 stays a hole
    for (int i = 0; i < regions; ++i) {
      RegionSpec r;
      static constexpr uint32_t kGaps[] = {0, 0, 0, 1, 2};
      cursor += rng_.pick(kGaps);  // a gap of 0 makes neighbours that a range can straddle
      r.first_page = cursor;
      if (program_.kind == ProgramKind::kClassic) {
        r.pages = rng_.percent(50) ? rng_.between(1, 4) : rng_.between(1, 16);
      } else {
        r.pages = rng_.percent(50) ? rng_.between(2, 6) : rng_.between(3, 16);  // room for parts
      }
      uint32_t k = rng_.below(100);
      r.kind = k < 62   ? RegionKind::kAnonPrivate
               : k < 77 ? RegionKind::kAnonShared
               : k < 87 ? RegionKind::kFileSharedRw
               : k < 94 ? RegionKind::kFilePrivateRo
                        : RegionKind::kFileSharedRo;
      static constexpr int kInitial[] = {kNone, kR, kRW, kRW, kRW, kRX};
      static constexpr int kInitialReadOnly[] = {kNone, kR, kR, kRX};
      r.prot = r.kind == RegionKind::kFileSharedRo ? rng_.pick(kInitialReadOnly) : rng_.pick(kInitial);
      if (r.kind >= RegionKind::kFileSharedRw) {
        r.file_pages = r.pages > 1 && rng_.percent(12) ? r.pages - 1 : r.pages;
      }
      for (uint32_t p = 0; p < r.pages; ++p) owner_[r.first_page + p] = static_cast<int8_t>(i);
      cursor += r.pages;
      program_.regions.push_back(r);
    }
  }

  // ---- the model ------------------------------------------------------------------------------
  Range extent(int region) const {  // first to last page the region owns (holes included)
    Range r;
    bool found = false;
    for (uint32_t p = 0; p < kUsablePages; ++p) {
      if (owner_[p] != region) continue;
      if (!found) r.page = p;
      r.pages = p + 1 - r.page;
      found = true;
    }
    return r;
  }
  std::vector<int> live_regions() const {
    std::vector<int> live;
    for (int i = 0; i < static_cast<int>(program_.regions.size()); ++i)
      if (extent(i).pages) live.push_back(i);
    return live;
  }
  uint32_t highest_used_page() const {
    uint32_t top = 0;
    for (uint32_t p = 0; p < kUsablePages; ++p)
      if (owner_[p] >= 0) top = p;
    return top;
  }
  void set_owner(Range r, int region) {
    for (uint32_t p = r.page; p < r.end() && p < kUsablePages; ++p) owner_[p] = static_cast<int8_t>(region);
  }
  static Range clamp(Range r) {
    if (r.page >= kUsablePages) r.page = kUsablePages - 1;
    if (r.end() > kUsablePages) r.pages = kUsablePages - r.page;
    return r;
  }

  // A live region's extent, or, when everything is unmapped, a range where regions used to be.
  Range some_region(int *region = nullptr) {
    std::vector<int> live = live_regions();
    if (live.empty()) {  // where a region was set up: it may be mapped again
      int r = static_cast<int>(rng_.below(program_.regions.size()));
      if (region) *region = r;
      return {program_.regions[r].first_page, program_.regions[r].pages};
    }
    int r = live[rng_.below(live.size())];
    if (region) *region = r;
    return extent(r);
  }
  Range sub_range(Range r) {
    if (r.pages == 0) return r;
    uint32_t start = r.page + rng_.below(r.pages);
    return {start, rng_.between(1, r.end() - start)};
  }
  // The tail of one region and the head of the next one up (adjacent or across a hole).
  Range straddle() {
    std::vector<int> live = live_regions();
    std::vector<Range> ext;
    for (int r : live) ext.push_back(extent(r));
    std::sort(ext.begin(), ext.end(), [](Range a, Range b) { return a.page < b.page; });
    if (ext.size() < 2) {
      Range r = some_region();
      return clamp({r.page, r.pages + rng_.between(1, 3)});
    }
    size_t i = rng_.below(ext.size() - 1);
    Range lo = ext[i], hi = ext[i + 1];
    uint32_t start = lo.end() - rng_.between(1, lo.pages);
    uint32_t end = hi.page + rng_.between(1, hi.pages);
    if (end <= start) end = start + 1;  // extents can interleave after partial munmaps
    return clamp({start, end - start});
  }
  Range with_holes() {
    if (rng_.percent(25)) return {0, rng_.between(2, 4)};  // page 0 is never mapped
    Range r = some_region();
    return clamp({r.page + rng_.below(r.pages ? r.pages : 1), r.pages + rng_.between(1, 4)});
  }
  uint32_t target_page() {
    uint32_t roll = rng_.below(100);
    if (roll < 45 && !hot_.empty()) {
      Range r = hot_[rng_.below(hot_.size())].range;
      return r.page + rng_.below(r.pages);
    }
    if (roll < 85) {
      Range r = some_region();
      return r.page + rng_.below(r.pages ? r.pages : 1);
    }
    return rng_.below(highest_used_page() + 4);
  }
  uint8_t thread() { return static_cast<uint8_t>(rng_.below(program_.threads)); }

  static Op range_op(OpKind kind, Range r) {
    Op op;
    op.kind = kind;
    op.addr = r.page * kPage;
    op.len = r.pages * kPage;
    return op;
  }

  // ---- ops --------------------------------------------------------------------------------------
  void add_op() {
    // Unmapped regions come back now and then, so that long programs keep having memory to
    // work on (and ranges that were groups get mapped again).
    for (int r = 0; r < static_cast<int>(program_.regions.size()); ++r)
      if (extent(r).pages == 0 && rng_.percent(5)) return recreate(r);
    uint32_t roll = rng_.below(100);
    if (roll < 36) return hot_toggle();
    if (roll < 50) return probe(OpKind::kProbeRead);
    if (roll < 62) return probe(OpKind::kProbeWrite);
    if (roll < 74) return mprotect_misc();
    if (roll < 79) return syscall_io(OpKind::kSysRead);
    if (roll < 84) return syscall_io(OpKind::kSysWrite);
    if (roll < 88) return munmap_op();
    if (roll < 93) return mremap_op();
    if (roll < 96) return mmap_fixed();
    if (roll < 99) return sigmask();
    return fork_op();  // rare: a fork is slow on an emulated CPU
  }

  void recreate(int region) {
    const RegionSpec &spec = program_.regions[region];
    Op op = range_op(OpKind::kMmapFixed, {spec.first_page, spec.pages});
    op.flags = MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS;
    op.prot = rng_.percent(70) ? PROT_READ | PROT_WRITE : rng_.pick(kProts);
    op.thread = thread();
    op.note = "recreate";
    set_owner({spec.first_page, spec.pages}, region);
    program_.ops.push_back(op);
  }

  HotRange new_hot_range() {
    uint32_t roll = rng_.below(100);
    Range r = roll < 60 ? some_region() : roll < 85 ? sub_range(some_region()) : straddle();
    if (r.pages == 0) r = some_region();
    const int *pair = kHotPairs[rng_.below(sizeof kHotPairs / sizeof kHotPairs[0])];
    HotRange h{clamp(r), pair[0], pair[1]};
    if (rng_.percent(3)) h.prot_b = kX;
    h.last_thread = thread();
    return h;
  }
  bool mapped(Range r) const {
    for (uint32_t p = r.page; p < r.end(); ++p)
      if (owner_[p] < 0) return false;
    return true;
  }

  void hot_toggle() {
    if (hot_.empty() || (hot_.size() < 3 && rng_.percent(8))) hot_.push_back(new_hot_range());
    HotRange &h = hot_[rng_.below(hot_.size())];
    // A hot range whose memory was unmapped or moved away is usually replaced by one over live
    // memory; sometimes it is toggled on anyway (a group's range that is gone).
    if (!mapped(h.range) && rng_.percent(75)) h = new_hot_range();
    Op op = range_op(OpKind::kMprotect, h.range);
    if (rng_.percent(12)) {
      static constexpr int kAny[] = {kNone, kR, kRW};
      op.prot = rng_.pick(kAny);
    } else {
      op.prot = h.next_is_b ? h.prot_b : h.prot_a;
      h.next_is_b = !h.next_is_b;
    }
    // Half the toggles come from another thread than the last one, so grants and revocations
    // made by one thread are observed by the others.
    int t = thread();
    if (program_.threads > 1 && rng_.percent(50))
      t = (h.last_thread + 1 + static_cast<int>(rng_.below(program_.threads - 1))) % program_.threads;
    op.thread = static_cast<uint8_t>(t);
    h.last_thread = t;
    op.note = "hot";
    program_.ops.push_back(op);
  }

  int any_prot() { return rng_.percent(6) ? rng_.pick(kRareProts) : rng_.pick(kProts); }

  void mprotect_misc() {
    uint32_t roll = rng_.below(100);
    Op op;
    bool chosen_prot = false;  // the variant picks its own protection
    if (roll < 25) {
      op = range_op(OpKind::kMprotect, some_region());
      op.note = "whole";
    } else if (roll < 45) {
      op = range_op(OpKind::kMprotect, sub_range(some_region()));
      if (rng_.percent(30)) op.len -= rng_.between(1, kPage - 1);  // the kernel rounds the length up
      op.note = "sub";
    } else if (roll < 60) {
      op = range_op(OpKind::kMprotect, straddle());
      op.note = "straddle";
    } else if (roll < 70) {
      op = range_op(OpKind::kMprotect, with_holes());
      op.note = "holes";
    } else if (roll < 78) {
      op = range_op(OpKind::kMprotect, some_region());
      static constexpr uint32_t kMisalign[] = {1, 8, 2048, 4095};
      op.addr += rng_.pick(kMisalign);
      op.note = "unaligned";
    } else if (roll < 86) {
      op = range_op(OpKind::kMprotect, some_region());
      op.len = 0;
      if (rng_.percent(25)) op.addr += 16;
      op.note = "len0";
    } else if (roll < 94) {
      op = range_op(OpKind::kMprotect, some_region());
      static constexpr int kBad[] = {0x10 | kR, 0x20 | kRW, 0x40, PROT_GROWSDOWN | PROT_GROWSUP | kR};
      op.prot = rng_.pick(kBad);
      op.note = "badprot";
      chosen_prot = true;
    } else {
      // Re-protect a hot range with a protection outside its pair (execute, write-only, ...).
      if (hot_.empty()) hot_.push_back(new_hot_range());
      op = range_op(OpKind::kMprotect, hot_[rng_.below(hot_.size())].range);
      op.prot = rng_.pick(kRareProts);
      op.note = "hot-odd";
      chosen_prot = true;
    }
    if (!chosen_prot) op.prot = any_prot();
    op.thread = thread();
    program_.ops.push_back(op);
  }

  void probe(OpKind kind) {
    Op op;
    op.kind = kind;
    op.thread = thread();
    op.addr = target_page() * kPage + rng_.pick(kProbeOffsets);
    op.value = static_cast<uint8_t>(rng_.next() | 1);
    program_.ops.push_back(op);
  }

  void syscall_io(OpKind kind) {
    static constexpr uint32_t kOffsets[] = {0, 64, 4000};
    static constexpr uint32_t kLens[] = {1, 64, 4096, 5000, 8192};
    Op op;
    op.kind = kind;
    op.thread = thread();
    op.addr = target_page() * kPage + rng_.pick(kOffsets);
    op.len = rng_.pick(kLens);
    if (op.addr + op.len > kUsablePages * kPage) op.len = kUsablePages * kPage - op.addr;
    program_.ops.push_back(op);
  }

  void munmap_op() {
    int region = 0;
    Range r = some_region(&region);
    uint32_t roll = rng_.below(100);
    Op op;
    if (roll < 20) {
      op = range_op(OpKind::kMunmap, r);
      op.note = "whole";
    } else if (roll < 90) {
      uint32_t n = rng_.between(1, std::max(1u, std::min(3u, r.pages)));
      uint32_t where = rng_.below(3);  // head, tail or middle
      Range part = where == 0 ? Range{r.page, n}
                   : where == 1 ? Range{r.end() > n ? r.end() - n : r.page, n}
                                : Range{r.page + rng_.below(r.pages ? r.pages : 1), n};
      r = clamp(part);
      op = range_op(OpKind::kMunmap, r);
      op.note = "part";
    } else {
      r = with_holes();
      op = range_op(OpKind::kMunmap, r);
      op.note = "holes";
    }
    set_owner(r, -1);
    op.thread = thread();
    program_.ops.push_back(op);
  }

  void mremap_op() {
    int region = 0;
    Range r = some_region(&region);
    if (r.pages == 0) r.pages = 1;
    Op op = range_op(OpKind::kMremap, r);
    op.thread = thread();
    uint32_t roll = rng_.below(100);
    if (roll < 25) {
      uint32_t grown = std::min(r.pages + rng_.between(1, 8), kMaxRegionGrowthPages);
      op.new_len = grown * kPage;
      op.note = "grow";
      // Guess: in place when the model says the pages above are free.
      bool free_above = true;
      for (uint32_t p = r.end(); p < r.page + grown && p < kUsablePages; ++p) free_above &= owner_[p] < 0;
      if (free_above) set_owner(clamp({r.page, grown}), region);
    } else if (roll < 45) {
      uint32_t kept = r.pages > 1 ? rng_.between(1, r.pages - 1) : 1;
      op.new_len = kept * kPage;
      if (rng_.percent(30)) op.flags = MREMAP_MAYMOVE;  // shrinking never moves
      set_owner({r.page + kept, r.pages - kept}, -1);
      op.note = "shrink";
    } else if (roll < 85) {
      Range from = rng_.percent(20) ? sub_range(r) : r;
      uint32_t pages = from.pages;
      if (rng_.percent(30)) pages = std::min(pages + rng_.between(1, 4), kMaxRegionGrowthPages);
      else if (rng_.percent(20) && pages > 1) pages -= 1;
      uint32_t target = kMoveZonePage + rng_.below(4) * kMoveSlotPages;
      op.addr = from.page * kPage;
      op.len = from.pages * kPage;
      op.new_len = pages * kPage;
      op.new_addr = target * kPage;
      op.flags = MREMAP_MAYMOVE | MREMAP_FIXED;
      set_owner(from, -1);
      set_owner(clamp({target, pages}), region);
      op.note = "move";
    } else if (roll < 90) {
      op.new_len = op.len;
      op.flags = MREMAP_MAYMOVE;  // same size: stays where it is
      op.note = "same";
    } else {
      op.new_len = op.len;
      switch (rng_.below(4)) {
        case 0: op.addr += 8; op.flags = MREMAP_MAYMOVE; break;                    // EINVAL
        case 1: op.flags = MREMAP_FIXED; op.new_addr = kMoveZonePage * kPage; break;  // EINVAL
        case 2: op.new_len = 0; break;                                              // EINVAL
        default: op.flags = MREMAP_MAYMOVE | MREMAP_FIXED; op.new_addr = op.addr; break;  // overlap
      }
      op.note = "bad";
    }
    program_.ops.push_back(op);
  }

  void mmap_fixed() {
    int region = 0;
    Range r = some_region(&region);
    uint32_t roll = rng_.below(100);
    Op op;
    op.flags = MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS;
    if (roll < 40) {
      r = sub_range(r);
      op.note = "part";
    } else if (roll < 65) {
      const RegionSpec &spec = program_.regions[region];
      r = {spec.first_page, spec.pages};
      op.note = "recreate";
    } else if (roll < 80) {
      r = straddle();
      op.note = "straddle";
    } else {
      r = rng_.percent(50) ? sub_range(r) : with_holes();
      op.flags = MAP_FIXED_NOREPLACE | MAP_PRIVATE | MAP_ANONYMOUS;
      op.note = "noreplace";
    }
    if (r.pages == 0) r.pages = 1;
    if (rng_.percent(20)) op.flags = (op.flags & ~MAP_PRIVATE) | MAP_SHARED;
    op.kind = OpKind::kMmapFixed;
    op.addr = r.page * kPage;
    op.len = r.pages * kPage;
    op.prot = rng_.pick(kProts);
    op.thread = thread();
    if (!(op.flags & MAP_FIXED_NOREPLACE)) set_owner(r, region);
    program_.ops.push_back(op);
  }

  void sigmask() {
    Op op;
    op.kind = OpKind::kSigmask;
    op.thread = thread();
    op.write = rng_.percent(60);
    program_.ops.push_back(op);
  }

  void fork_op() {
    Op op;
    op.kind = OpKind::kFork;
    op.thread = thread();
    op.addr = target_page() * kPage + rng_.pick(kProbeOffsets);
    op.write = rng_.percent(50);
    op.value = static_cast<uint8_t>(rng_.next() | 1);
    program_.ops.push_back(op);
  }

  // ---- sub-range programs ----------------------------------------------------------------------
  bool full() const { return program_.ops.size() >= max_ops_; }
  void push(Op op) {
    if (!full()) program_.ops.push_back(op);
  }

  void add_sub_range_op() {
    if (rng_.percent(33)) return add_op();  // the classic mix: munmap, mremap, mmap over nests...
    if (nests_.empty() || (nests_.size() < 2 && rng_.percent(10))) nests_.push_back(new_nest());
    Nest &h = nests_[rng_.below(nests_.size())];
    // A nest whose memory is gone is usually replaced; sometimes it is protected anyway.
    if (!mapped(h.whole) && rng_.percent(75)) h = new_nest();
    if (h.jit) return jit_step(h);
    nest_step(h);
  }

  Nest new_nest() {
    Nest h;
    Range r = some_region();
    for (int tries = 0; tries < 3 && r.pages < 2; ++tries) r = some_region();
    if (r.pages >= 4 && rng_.percent(20)) {  // a part of a region, of two pages or more
      uint32_t pages = rng_.between(2, r.pages - 1);
      r = {r.page + rng_.below(r.pages - pages + 1), pages};
    }
    if (r.pages == 0) r.pages = 1;
    h.whole = clamp(r);
    h.jit = rng_.percent(35);
    h.jit_thread = thread();
    if (h.jit) {
      h.halves = h.whole.pages >= 2 && rng_.percent(60);
      h.prot_a = kRW;  // made writable and filled, then executable (alloc_exec_mem)
      h.prot_b = kRX;
    } else {
      const int *pair = kNestPairs[rng_.below(sizeof kNestPairs / sizeof kNestPairs[0])];
      h.prot_a = pair[0];
      h.prot_b = pair[1];
      h.next_is_b = rng_.percent(50);
    }
    return h;
  }

  Op mprotect_op(Range r, int prot, const char *note, uint8_t thread) {
    Op op = range_op(OpKind::kMprotect, r);
    op.prot = prot;
    op.note = note;
    op.thread = thread;
    return op;
  }

  void whole_toggle(Nest &h, const char *note, uint8_t thread) {
    int prot = h.next_is_b ? h.prot_b : h.prot_a;
    h.next_is_b = !h.next_is_b;
    ++h.whole_calls;
    h.part = {};
    push(mprotect_op(h.whole, prot, note, thread));
  }

  // A load, a store or a system call at a page of the nest: in the part just protected, next to
  // it, or anywhere in the whole range.
  void probe_nest(const Nest &h, Range part, const char *note) {
    uint32_t page = h.whole.page + rng_.below(h.whole.pages ? h.whole.pages : 1);
    uint32_t roll = rng_.below(100);
    if (roll < 40 && part.pages) {
      page = rng_.percent(50) ? part.page : part.end() - 1;
    } else if (roll < 70 && part.pages) {
      bool has_before = part.page > h.whole.page, has_after = part.end() < h.whole.end();
      if (has_before && (!has_after || rng_.percent(50))) page = part.page - 1;
      else if (has_after) page = part.end();
      else page = part.page;
    }
    Op op;
    op.thread = thread();
    op.note = note;
    uint32_t kind = rng_.below(100);
    if (kind < 75) {
      op.kind = kind < 40 ? OpKind::kProbeRead : OpKind::kProbeWrite;
      op.addr = page * kPage + rng_.pick(kProbeOffsets);
      op.value = static_cast<uint8_t>(rng_.next() | 1);
    } else {
      // Often from near the end of a page into the next one: across the part's edge.
      static constexpr uint32_t kOffsets[] = {0, 64, 4000, 4000};
      static constexpr uint32_t kLens[] = {64, 4096, 5000, 8192};
      op.kind = kind < 88 ? OpKind::kSysRead : OpKind::kSysWrite;
      op.addr = page * kPage + rng_.pick(kOffsets);
      op.len = rng_.pick(kLens);
      if (op.addr + op.len > kUsablePages * kPage) op.len = kUsablePages * kPage - op.addr;
    }
    push(op);
  }

  // Random parts: until the whole range has been protected twice (a group from then on), the
  // whole range; then mostly a part of it, sometimes the whole range again (which folds the
  // parts back). Each step is followed by one to three probes.
  void nest_step(Nest &h) {
    Range w = h.whole;
    if (h.whole_calls < 2 || rng_.percent(25)) {
      whole_toggle(h, "nest-whole", thread());
      uint32_t probes = rng_.between(0, 2);
      for (uint32_t i = 0; i < probes; ++i) probe_nest(h, {}, "nest");
      return;
    }
    Range part;
    const char *note;
    uint32_t roll = rng_.below(100);
    uint32_t most = w.pages > 1 ? w.pages - 1 : 1;
    if (roll < 15 && h.part.pages) {
      part = sub_range(h.part);
      note = "nest-inner";
    } else if (roll < 45 || w.pages < 2) {
      part = {w.page + rng_.below(w.pages), 1};
      note = "nest-page";
    } else if (roll < 62) {
      part = {w.page, rng_.between(1, most)};
      note = "nest-prefix";
    } else if (roll < 79) {
      uint32_t n = rng_.between(1, most);
      part = {w.end() - n, n};
      note = "nest-suffix";
    } else if (w.pages >= 3) {
      uint32_t start = rng_.between(1, w.pages - 2);
      part = {w.page + start, rng_.between(1, w.pages - 1 - start)};
      note = "nest-middle";
    } else {
      part = {w.page + rng_.below(w.pages), 1};
      note = "nest-page";
    }
    int prot = rng_.percent(5) ? rng_.pick(kRareProts) : rng_.pick(kPartProts);
    Op op = mprotect_op(part, prot, note, thread());
    if (rng_.percent(10)) op.len -= rng_.between(1, kPage - 1);  // the kernel rounds the length up
    h.part = part;
    push(op);
    uint32_t probes = rng_.between(1, 3);
    for (uint32_t i = 0; i < probes; ++i) probe_nest(h, part, "nest");
  }

  // Ruby's YJIT: the area is made writable, filled and made executable; then, over and over, one
  // page (mostly the one being written, sometimes an older one) read/write, a store to it from the
  // JIT's thread, and the whole area (or its second half, then its first) read/exec again, after
  // which the page is probed (a store there faults).
  void jit_step(Nest &h) {
    Range w = h.whole;
    uint8_t jt = h.jit_thread;
    if (h.whole_calls < 2) {
      h.next_is_b = h.whole_calls == 1;
      whole_toggle(h, "jit-fill", jt);
      if (h.whole_calls == 1) {
        Op st;
        st.kind = OpKind::kProbeWrite;
        st.thread = jt;
        st.addr = (w.page + rng_.below(w.pages)) * kPage + rng_.pick(kProbeOffsets);
        st.value = static_cast<uint8_t>(rng_.next() | 1);
        st.note = "jit";
        push(st);
      }
      return;
    }
    Range halves[2] = {w, {}};
    int n_halves = 1;
    if (h.halves) {
      halves[0] = {w.page, w.pages / 2};
      halves[1] = {w.page + w.pages / 2, w.pages - w.pages / 2};
      n_halves = 2;
    }
    uint32_t written[2] = {0, 0};
    bool second_first = rng_.percent(50);
    for (int k = 0; k < n_halves; ++k) {
      const Range &half = halves[second_first ? n_halves - 1 - k : k];
      if (half.pages == 0) continue;
      uint32_t frontier = std::min(h.frontier, half.pages - 1);
      uint32_t page = rng_.percent(75) ? frontier : rng_.below(frontier + 1);  // older: a patched jump
      page += half.page;
      written[k] = page;
      push(mprotect_op({page, 1}, kRW, "jit-page", jt));
      Op st;
      st.kind = OpKind::kProbeWrite;
      st.thread = jt;
      st.addr = page * kPage + rng_.pick(kProbeOffsets);
      st.value = static_cast<uint8_t>(rng_.next() | 1);
      st.note = "jit";
      push(st);
      if (rng_.percent(20)) {  // code that runs past the page's end is written there next
        if (page + 1 < half.end()) push(mprotect_op({page + 1, 1}, kRW, "jit-page", jt));
      }
    }
    if (rng_.percent(40)) ++h.frontier;
    // The second half (outlined code) first, as YJIT does, then the first.
    for (int k = n_halves - 1; k >= 0; --k)
      push(mprotect_op(halves[k], kRX, h.halves ? "jit-half" : "jit-whole", jt));
    uint32_t probes = rng_.between(1, 2);
    for (uint32_t i = 0; i < probes; ++i) {
      uint32_t page = written[rng_.below(n_halves)];
      Op op;
      op.thread = thread();
      op.note = "jit";
      uint32_t roll = rng_.below(100);
      if (roll < 55) {
        op.kind = OpKind::kProbeRead;
      } else if (roll < 80) {
        op.kind = OpKind::kProbeWrite;  // read/exec now: faults
        op.value = static_cast<uint8_t>(rng_.next() | 1);
      } else {
        op.kind = roll < 90 ? OpKind::kSysWrite : OpKind::kSysRead;
        op.addr = page * kPage + 64;
        op.len = 64;
        push(op);
        continue;
      }
      op.addr = page * kPage + rng_.pick(kProbeOffsets);
      push(op);
    }
  }

  SplitMix64 rng_;
  GeneratorLimits limits_;
  Program program_;
  std::vector<HotRange> hot_;
  std::vector<Nest> nests_;
  uint32_t max_ops_ = 0;
  int8_t owner_[kUsablePages];  // per page: -1 free, else the index of the region that owns it
};

}  // namespace

Program generate_program(uint64_t seed, const GeneratorLimits &limits) {
  return Generator(seed, limits).build();
}

ProgramKind program_kind(uint64_t seed, KindChoice kinds) {
  if (kinds == KindChoice::kClassic) return ProgramKind::kClassic;
  if (kinds == KindChoice::kSubRange) return ProgramKind::kSubRange;
  // A PRNG of its own (the seed's main stream is left as it was): one seed in four. Changing the
  // salt changes which seeds are sub-range programs, and so every reproducer written down.
  SplitMix64 draw(seed ^ 0x7375622d72616e68ull);
  return draw.percent(25) ? ProgramKind::kSubRange : ProgramKind::kClassic;
}

}  // namespace mpkdiff

// prng.h - the only source of randomness in mpk_diff: SplitMix64, seeded by the program's seed.
//
// A program is a pure function of its seed (and the size limits), on every host and every run,
// which is what lets two processes be compared seed by seed.
#pragma once

#include <cstdint>

namespace mpkdiff {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0. The modulo bias is irrelevant for test generation.
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(next() % n); }
  // Uniform in [lo, hi].
  uint32_t between(uint32_t lo, uint32_t hi) { return lo + below(hi - lo + 1); }
  // True with probability percent/100.
  bool percent(uint32_t percent) { return below(100) < percent; }
  template <typename T, unsigned N>
  const T &pick(const T (&items)[N]) { return items[below(N)]; }

 private:
  uint64_t state_;
};

}  // namespace mpkdiff

// match_region(): criteria, first match in file order, and thread_right().
#include <gtest/gtest.h>
#include <sys/mman.h>

#include "policy_text.h"

namespace mpk::cfg {
namespace {

using test::load_text;

MappingInfo anon(uint64_t addr, uint64_t len, int prot, int flags = MAP_PRIVATE | MAP_ANONYMOUS) {
  MappingInfo m;
  m.addr = addr;
  m.len = len;
  m.prot = prot;
  m.flags = flags;
  return m;
}

MappingInfo file(const char *path, uint64_t len, int prot) {
  MappingInfo m = anon(0x10000, len, prot, MAP_SHARED);
  m.path = path;
  return m;
}

const char *name_of(const Region *r) { return r ? r->name : "(none)"; }

TEST(Match, FirstRegionInFileOrderWins) {
  auto l = load_text(R"(
[[region]]
name = "big-rw"
min_size = "1M"
prot = "rw"
action = "emulate"
[[region]]
name = "any-rw"
prot = "rw"
action = "isolate"
[[region]]
name = "big"
min_size = "1M"
action = "passthrough"
)");
  ASSERT_TRUE(l.ok) << l.error;
  const Policy &p = *l.policy;
  constexpr int kRW = PROT_READ | PROT_WRITE;
  EXPECT_STREQ(name_of(match_region(p, anon(0x1000, 2 << 20, kRW))), "big-rw");
  EXPECT_STREQ(name_of(match_region(p, anon(0x1000, 4096, kRW))), "any-rw");
  EXPECT_STREQ(name_of(match_region(p, anon(0x1000, 2 << 20, PROT_READ))), "big");
  EXPECT_EQ(match_region(p, anon(0x1000, 4096, PROT_READ)), nullptr);
}

TEST(Match, SizeBoundsAreInclusive) {
  auto l = load_text("[[region]]\nname = \"s\"\nmin_size = \"64K\"\nmax_size = \"128K\"\naction = \"emulate\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  const Region &r = l.policy->regions[0];
  EXPECT_FALSE(region_matches(r, anon(0, (64 << 10) - 1, PROT_READ)));
  EXPECT_TRUE(region_matches(r, anon(0, 64 << 10, PROT_READ)));
  EXPECT_TRUE(region_matches(r, anon(0, 128 << 10, PROT_READ)));
  EXPECT_FALSE(region_matches(r, anon(0, (128 << 10) + 1, PROT_READ)));
}

TEST(Match, ProtIsExactAndIgnoresOtherBits) {
  auto l = load_text("[[region]]\nname = \"p\"\nprot = \"rx\"\naction = \"emulate\"\n"
                     "[[region]]\nname = \"n\"\nprot = \"none\"\naction = \"emulate\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  const Region &rx = l.policy->regions[0];
  EXPECT_TRUE(region_matches(rx, anon(0, 4096, PROT_READ | PROT_EXEC)));
  EXPECT_TRUE(region_matches(rx, anon(0, 4096, PROT_READ | PROT_EXEC | PROT_GROWSDOWN)));
  EXPECT_FALSE(region_matches(rx, anon(0, 4096, PROT_READ)));
  EXPECT_FALSE(region_matches(rx, anon(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC)));
  EXPECT_TRUE(region_matches(l.policy->regions[1], anon(0, 4096, PROT_NONE)));
  EXPECT_FALSE(region_matches(l.policy->regions[1], anon(0, 4096, PROT_READ)));
}

TEST(Match, AddressRangeHoldsTheWholeMapping) {
  auto l = load_text("[[region]]\nname = \"a\"\naddress = [\"0x10000\", \"0x20000\"]\naction = \"emulate\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  const Region &r = l.policy->regions[0];
  EXPECT_TRUE(region_matches(r, anon(0x10000, 0x10000, PROT_READ)));
  EXPECT_TRUE(region_matches(r, anon(0x18000, 0x1000, PROT_READ)));
  EXPECT_FALSE(region_matches(r, anon(0xf000, 0x2000, PROT_READ)));    // starts below
  EXPECT_FALSE(region_matches(r, anon(0x1f000, 0x2000, PROT_READ)));   // ends above
  EXPECT_FALSE(region_matches(r, anon(0x20000, 0x1000, PROT_READ)));   // hi is exclusive
  EXPECT_FALSE(region_matches(r, anon(0x18000, ~uint64_t{0}, PROT_READ)));  // no overflow
}

TEST(Match, PathOnlyMatchesFileMappings) {
  auto l = load_text("[[region]]\nname = \"f\"\npath = \"/var/cache/**.dat\"\naction = \"emulate\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  const Region &r = l.policy->regions[0];
  EXPECT_TRUE(region_matches(r, file("/var/cache/a/b.dat", 4096, PROT_READ)));
  EXPECT_FALSE(region_matches(r, file("/var/cache/a/b.txt", 4096, PROT_READ)));
  EXPECT_FALSE(region_matches(r, anon(0x1000, 4096, PROT_READ)));
}

TEST(Match, AnonymousAndSharedNeedKnownFlags) {
  auto l = load_text("[[region]]\nname = \"shm\"\nanonymous = true\nshared = true\naction = \"emulate\"\n"
                     "[[region]]\nname = \"file\"\nanonymous = false\naction = \"passthrough\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  const Policy &p = *l.policy;
  EXPECT_STREQ(name_of(match_region(p, anon(0, 4096, PROT_READ, MAP_SHARED | MAP_ANONYMOUS))), "shm");
  EXPECT_STREQ(name_of(match_region(p, anon(0, 4096, PROT_READ, MAP_SHARED_VALIDATE | MAP_ANONYMOUS))), "shm");
  EXPECT_EQ(match_region(p, anon(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)), nullptr);
  EXPECT_STREQ(name_of(match_region(p, file("/x", 4096, PROT_READ))), "file");
  EXPECT_EQ(match_region(p, anon(0, 4096, PROT_READ, kFlagsUnknown)), nullptr);
}

TEST(Match, EveryCriterionMustHold) {
  auto l = load_text(R"(
[[region]]
name = "all"
path = "/data/*"
min_size = 4096
prot = "r"
shared = true
action = "emulate"
)");
  ASSERT_TRUE(l.ok) << l.error;
  const Region &r = l.policy->regions[0];
  EXPECT_TRUE(region_matches(r, file("/data/x", 8192, PROT_READ)));
  EXPECT_FALSE(region_matches(r, file("/data/x", 8192, PROT_READ | PROT_WRITE)));
  EXPECT_FALSE(region_matches(r, file("/data/x", 100, PROT_READ)));
  EXPECT_FALSE(region_matches(r, file("/other/x", 8192, PROT_READ)));
  MappingInfo priv = file("/data/x", 8192, PROT_READ);
  priv.flags = MAP_PRIVATE;
  EXPECT_FALSE(region_matches(r, priv));
}

TEST(ThreadRight, FirstMatchingRuleElseDefault) {
  auto l = load_text(R"(
[[region]]
name = "iso"
prot = "rw"
action = "isolate"
default = "r"
[[region.thread]]
name = "mc-worker*"
right = "rw"
[[region.thread]]
start = "worker_libevent"
right = "rw"
[[region.thread]]
name = "mc-lru*"
start = "lru_*"
right = "none"
[[region.thread]]
name = "mc-*"
right = "none"
)");
  ASSERT_TRUE(l.ok) << l.error;
  const Region &r = l.policy->regions[0];
  EXPECT_EQ(thread_right(r, "mc-worker3", nullptr), kRightReadWrite);
  EXPECT_EQ(thread_right(r, "other", "worker_libevent"), kRightReadWrite);
  EXPECT_EQ(thread_right(r, "mc-lrumaint", "lru_maintainer_thread"), kRightNone);
  // "mc-lru*" alone is not enough for rule 3 (its start glob must hold too); rule 4 then applies.
  EXPECT_EQ(thread_right(r, "mc-lrumaint", "other"), kRightNone);
  EXPECT_EQ(thread_right(r, "main", "main"), kRightRead);  // the default
  EXPECT_EQ(thread_right(r, nullptr, nullptr), kRightRead);
  // The order of rules matters: a worker named "mc-worker" never reaches the "mc-*" rule.
  EXPECT_EQ(thread_right(r, "mc-worker", "anything"), kRightReadWrite);
}

TEST(ThreadRight, NoRulesMeansDefault) {
  auto l = load_text("[[region]]\nname = \"iso\"\nprot = \"rw\"\naction = \"isolate\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  EXPECT_EQ(thread_right(l.policy->regions[0], "x", "y"), kRightNone);
}

TEST(Names, ForMessages) {
  char buf[8];
  EXPECT_STREQ(prot_string(PROT_READ | PROT_EXEC, buf), "r-x");
  EXPECT_STREQ(prot_string(PROT_NONE, buf), "none");
  EXPECT_STREQ(right_name(kRightReadWrite), "rw");
  EXPECT_STREQ(mode_name(Mode::kAudit), "audit");
  EXPECT_STREQ(action_name(Action::kIsolate), "isolate");
}

}  // namespace
}  // namespace mpk::cfg

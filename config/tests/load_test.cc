#include <gtest/gtest.h>

#include <memory>
#include <signal.h>
#include <sys/mman.h>

#include <cstring>

#include "policy_text.h"

namespace mpk::cfg {
namespace {

using test::load_text;

TEST(Defaults, AreWhatTheDocsSay) {
  auto p = std::make_unique<Policy>();
  init_defaults(p.get());
  EXPECT_EQ(p->settings.mode, Mode::kEnforce);
  EXPECT_EQ(p->settings.on_error, OnError::kFail);
  EXPECT_EQ(p->settings.key_budget, 13);
  EXPECT_EQ(p->settings.evict_rate, 100);
  EXPECT_EQ(p->settings.promote_after, 2);
  EXPECT_EQ(p->settings.sync_signal, SIGRTMAX - 2);
  EXPECT_TRUE(p->settings.log_to_stderr);
  EXPECT_EQ(p->region_count, 0);
  EXPECT_STREQ(p->source, "");
}

TEST(Load, EmptyFileIsTheDefaults) {
  auto l = load_text("# nothing\n");
  ASSERT_TRUE(l.ok) << l.error;
  EXPECT_EQ(l.policy->settings.key_budget, 13);
  EXPECT_EQ(l.policy->region_count, 0);
  EXPECT_NE(strstr(l.policy->source, "/p.toml"), nullptr);
}

TEST(Load, Settings) {
  auto l = load_text(R"(
mode = "audit"
on_error = "passthrough"
key_budget = 7
evict_rate = 0
promote_after = 1000
sync_signal = "SIGRTMIN+3"
log = "/var/log/mpk.log"
)");
  ASSERT_TRUE(l.ok) << l.error;
  const Settings &s = l.policy->settings;
  EXPECT_EQ(s.mode, Mode::kAudit);
  EXPECT_EQ(s.on_error, OnError::kPassthrough);
  EXPECT_EQ(s.key_budget, 7);
  EXPECT_EQ(s.evict_rate, 0);
  EXPECT_EQ(s.promote_after, 1000);
  EXPECT_EQ(s.sync_signal, SIGRTMIN + 3);
  EXPECT_FALSE(s.log_to_stderr);
  EXPECT_STREQ(s.log_path, "/var/log/mpk.log");
}

TEST(Load, SignalAsNumberAndRtmax) {
  auto l = load_text("sync_signal = " + std::to_string(SIGRTMAX) + "\nmode = \"off\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  EXPECT_EQ(l.policy->settings.sync_signal, SIGRTMAX);
  EXPECT_EQ(l.policy->settings.mode, Mode::kOff);
  auto m = load_text("sync_signal = \"RTMAX-5\"\n");
  ASSERT_TRUE(m.ok) << m.error;
  EXPECT_EQ(m.policy->settings.sync_signal, SIGRTMAX - 5);
}

TEST(Load, EmulateRegionWithEveryCriterion) {
  auto l = load_text(R"(
promote_after = 3

[[region]]
name = "luajit-mcode"
path = "/var/cache/*.dat"
min_size = "64K"
max_size = 1073741824
prot = "rw"
address = ["0x7f0000000000", "0x7fff00000000"]
caller = "lj_mcode_*"
anonymous = false
shared = true
action = "emulate"
exec = "exact"
grants = "eager"
)");
  ASSERT_TRUE(l.ok) << l.error;
  ASSERT_EQ(l.policy->region_count, 1);
  const Region &r = l.policy->regions[0];
  EXPECT_STREQ(r.name, "luajit-mcode");
  EXPECT_EQ(r.line, 4u);
  EXPECT_EQ(r.match, kMatchPath | kMatchMinSize | kMatchMaxSize | kMatchProt | kMatchAddress | kMatchCaller |
                         kMatchAnonymous | kMatchShared);
  EXPECT_STREQ(r.path, "/var/cache/*.dat");
  EXPECT_EQ(r.min_size, 64u << 10);
  EXPECT_EQ(r.max_size, 1u << 30);
  EXPECT_EQ(r.prot, PROT_READ | PROT_WRITE);
  EXPECT_EQ(r.addr_lo, 0x7f0000000000u);
  EXPECT_EQ(r.addr_hi, 0x7fff00000000u);
  EXPECT_EQ(r.caller.kind, CallerKind::kSymbol);
  EXPECT_STREQ(r.caller.glob, "lj_mcode_*");
  EXPECT_FALSE(r.anonymous);
  EXPECT_TRUE(r.shared);
  EXPECT_EQ(r.action, Action::kEmulate);
  EXPECT_EQ(r.promote_after, 3);  // inherited from the global setting
  EXPECT_EQ(r.exec, ExecMode::kExact);
  EXPECT_EQ(r.grants, Grants::kEager);
}

TEST(Load, RegionDefaultsAndOverride) {
  auto l = load_text(R"(
[[region]]
name = "a"
prot = "none"
action = "emulate"
promote_after = 1
[[region]]
name = "b"
prot = "rwx"
action = "passthrough"
)");
  ASSERT_TRUE(l.ok) << l.error;
  ASSERT_EQ(l.policy->region_count, 2);
  EXPECT_EQ(l.policy->regions[0].promote_after, 1);
  EXPECT_EQ(l.policy->regions[0].prot, PROT_NONE);
  EXPECT_EQ(l.policy->regions[0].exec, ExecMode::kCeiling);
  EXPECT_EQ(l.policy->regions[0].grants, Grants::kLazy);
  EXPECT_EQ(l.policy->regions[1].promote_after, 2);
  EXPECT_EQ(l.policy->regions[1].prot, PROT_READ | PROT_WRITE | PROT_EXEC);
  EXPECT_EQ(l.policy->regions[1].action, Action::kPassthrough);
}

TEST(Load, IsolateRegionWithThreadRules) {
  auto l = load_text(R"(
mode = "audit"
[[region]]
name = "secrets"
caller = "libcrypto.so*+0x1A2b0"
action = "isolate"
default = "r"
[[region.thread]]
name = "mc-worker*"
right = "rw"
[[region.thread]]
start = "worker_libevent"
right = "none"
[[region.thread]]
name = "x"
start = "y*"
right = "r"

[[region]]
name = "keys"
address = [4096, 8192]
action = "isolate"
enforce = "enforce"
mprotect = "thread"
)");
  ASSERT_TRUE(l.ok) << l.error;
  ASSERT_EQ(l.policy->region_count, 2);
  const Region &r = l.policy->regions[0];
  EXPECT_EQ(r.caller.kind, CallerKind::kModuleOffset);
  EXPECT_STREQ(r.caller.glob, "libcrypto.so*");
  EXPECT_EQ(r.caller.offset, 0x1a2b0u);
  EXPECT_EQ(r.default_right, kRightRead);
  EXPECT_EQ(r.mode, Mode::kAudit);  // the global mode
  ASSERT_EQ(r.thread_rule_count, 3);
  EXPECT_STREQ(r.threads[0].name, "mc-worker*");
  EXPECT_STREQ(r.threads[0].start, "");
  EXPECT_EQ(r.threads[0].right, kRightReadWrite);
  EXPECT_STREQ(r.threads[1].start, "worker_libevent");
  EXPECT_EQ(r.threads[1].right, kRightNone);
  EXPECT_STREQ(r.threads[2].name, "x");
  EXPECT_STREQ(r.threads[2].start, "y*");
  const Region &k = l.policy->regions[1];
  EXPECT_EQ(k.mode, Mode::kEnforce);  // the region's override
  EXPECT_EQ(k.addr_lo, 4096u);
  EXPECT_EQ(k.addr_hi, 8192u);
  EXPECT_EQ(k.default_right, kRightNone);
  EXPECT_EQ(r.mprotect, MprotectMode::kKernel);  // the default
  EXPECT_EQ(k.mprotect, MprotectMode::kThread);
}

TEST(Load, LimitsAreInclusive) {
  std::string text;
  for (int i = 0; i < kMaxRegions; ++i)
    text += "[[region]]\nname = \"r" + std::to_string(i) + "\"\nprot = \"r\"\naction = \"emulate\"\n";
  auto l = load_text(text);
  ASSERT_TRUE(l.ok) << l.error;
  EXPECT_EQ(l.policy->region_count, kMaxRegions);

  std::string iso = "[[region]]\nname = \"i\"\nprot = \"rw\"\naction = \"isolate\"\n";
  for (int i = 0; i < kMaxThreadRules; ++i) iso += "[[region.thread]]\nname = \"t\"\nright = \"r\"\n";
  auto m = load_text(iso);
  ASSERT_TRUE(m.ok) << m.error;
  EXPECT_EQ(m.policy->regions[0].thread_rule_count, kMaxThreadRules);

  std::string name(kNameMax, 'n');
  std::string path = "/" + std::string(kPathMax - 1, 'p');
  auto n = load_text("[[region]]\nname = \"" + name + "\"\npath = \"" + path + "\"\naction = \"emulate\"\n");
  ASSERT_TRUE(n.ok) << n.error;
  EXPECT_EQ(strlen(n.policy->regions[0].name), kNameMax);
  EXPECT_EQ(strlen(n.policy->regions[0].path), kPathMax);
}

TEST(Load, CallerCriteriaLoadTheUnwinder) {
  auto l = load_text("[[region]]\nname = \"c\"\ncaller = \"lj_mcode_*\"\naction = \"emulate\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  EXPECT_TRUE(caller_ready());
}

TEST(Load, PolicyIsPlainData) {
  static_assert(std::is_trivially_copyable_v<Policy>);
  static_assert(std::is_standard_layout_v<Policy>);
  auto l = load_text("[[region]]\nname = \"a\"\nprot = \"rw\"\naction = \"emulate\"\n");
  ASSERT_TRUE(l.ok);
  auto copy = std::make_unique<Policy>();
  memcpy(copy.get(), l.policy.get(), sizeof(Policy));  // how the shim moves it into its arena
  EXPECT_STREQ(copy->regions[0].name, "a");
}

TEST(Load, HeapRegionTakesAllocationCriteriaAndIsSkippedForMappings) {
  auto l = test::load_text(
      "[[region]]\nname = \"slabs\"\naction = \"isolate\"\nheap = true\nmin_size = \"512K\"\n"
      "module = \"memcached\"\ncaller = \"do_slabs_*\"\ndefault = \"rw\"\n"
      "[[region]]\nname = \"maps\"\naction = \"isolate\"\nmin_size = \"512K\"\n");
  ASSERT_TRUE(l.ok) << l.error;
  const Region &r = l.policy->regions[0];
  EXPECT_TRUE(r.heap);
  EXPECT_STREQ(r.module, "memcached");
  EXPECT_EQ(r.match, kMatchMinSize | kMatchModule | kMatchCaller);
  EXPECT_FALSE(l.policy->regions[1].heap);
  MappingInfo m;
  m.len = 1 << 20;
  // A mapping never matches a heap region: the first mapping region is the answer.
  EXPECT_EQ(match_region(*l.policy, m), &l.policy->regions[1]);
}

TEST(Load, GatesBelongToTheirRegionAndAHeapRegionMayHaveNoOtherCriterion) {
  auto l = test::load_text(
      "[[region]]\nname = \"a\"\naction = \"isolate\"\nmin_size = 1\n"
      "[[region]]\nname = \"keys\"\naction = \"isolate\"\nheap = true\n"
      "[[region.gate]]\nmodule = \"libcrypto.so*\"\nsymbols = [\"PEM_read_bio_*\", \"RSA_sign\"]\n"
      "[[region.gate]]\nmodule = \"libssl.so*\"\nsymbols = [\"SSL_CTX_use_PrivateKey*\"]\n");
  ASSERT_TRUE(l.ok) << l.error;
  ASSERT_EQ(l.policy->gate_count, 2);
  EXPECT_EQ(l.policy->regions[1].gate_count, 2);
  EXPECT_EQ(l.policy->regions[1].match, 0u);
  const Gate &g = l.policy->gates[0];
  EXPECT_EQ(g.region, 1);
  EXPECT_EQ(g.line, 9u);
  EXPECT_STREQ(g.module, "libcrypto.so*");
  ASSERT_EQ(g.symbol_count, 2);
  EXPECT_STREQ(g.symbols[1], "RSA_sign");
  EXPECT_EQ(l.policy->gates[1].region, 1);
}

TEST(Load, LoadingAgainIntoTheSamePolicyStartsFromNothing) {
  const std::string text =
      "[[region]]\nname = \"keys\"\naction = \"isolate\"\nheap = true\n"
      "[[region.gate]]\nmodule = \"libcrypto.so*\"\nsymbols = [\"*\"]\n";
  auto p = std::make_unique<Policy>();
  char err[256];
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(load_policy_text("p.toml", text.data(), text.size(), p.get(), err, sizeof err)) << err;
    EXPECT_EQ(p->gate_count, 1) << "round " << round;
    EXPECT_EQ(p->regions[0].gate_count, 1) << "round " << round;
  }
  ASSERT_FALSE(load_policy_text("p.toml", "mode = 1\n", 9, p.get(), err, sizeof err));
  EXPECT_EQ(p->gate_count, 0) << "a failed load leaves the defaults";
}

}  // namespace
}  // namespace mpk::cfg

// Caller criteria on this test binary's own stack (libunwind local unwinding, dladdr).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstring>

#include "caller.h"
#include "policy.h"

// Distinctive names, kept out of line and not tail-called, so they are real frames on the stack.
extern "C" __attribute__((noinline)) bool mpk_cfg_test_frame_outer(const mpk::cfg::CallerPattern &p,
                                                                    uintptr_t skip) {
  bool r = mpk::cfg::caller_matches(p, skip);
  asm volatile("" : : "r"(r) : "memory");
  return r;
}

namespace {

__attribute__((noinline)) bool mpk_cfg_test_static_frame(const mpk::cfg::CallerPattern &p) {
  bool r = mpk_cfg_test_frame_outer(p, 0);
  asm volatile("" : : "r"(r) : "memory");
  return r;
}

__attribute__((noinline)) void *mpk_cfg_test_thread_start(void *arg) {
  asm volatile("" : : "r"(arg) : "memory");
  return arg;
}

}  // namespace

namespace mpk::cfg {
namespace {

class Caller : public ::testing::Test {
 protected:
  void SetUp() override {
    char err[512];
    ASSERT_TRUE(caller_init(err, sizeof err)) << err;
    ASSERT_TRUE(caller_ready());
  }
};
using SymbolAt = Caller;

CallerPattern pattern(const char *text) {
  CallerPattern p;
  const char *why = nullptr;
  EXPECT_TRUE(parse_caller_pattern(text, &p, &why)) << text << ": " << (why ? why : "");
  return p;
}

// This executable's file name, as dladdr reports it.
std::string own_module() {
  Dl_info info;
  if (!dladdr(reinterpret_cast<void *>(&mpk_cfg_test_frame_outer), &info) || !info.dli_fname) return "";
  const char *slash = strrchr(info.dli_fname, '/');
  return slash ? slash + 1 : info.dli_fname;
}

TEST(CallerPattern, Parses) {
  CallerPattern p = pattern("lj_mcode_*");
  EXPECT_EQ(p.kind, CallerKind::kSymbol);
  EXPECT_STREQ(p.glob, "lj_mcode_*");
  p = pattern("libluajit-5.1.so*+0x1A2b0");
  EXPECT_EQ(p.kind, CallerKind::kModuleOffset);
  EXPECT_STREQ(p.glob, "libluajit-5.1.so*");
  EXPECT_EQ(p.offset, 0x1a2b0u);
  p = pattern("luajit+*");
  EXPECT_EQ(p.kind, CallerKind::kModuleAny);
  EXPECT_STREQ(p.glob, "luajit");
  const char *why = nullptr;
  EXPECT_FALSE(parse_caller_pattern("", &p, &why));
  EXPECT_FALSE(parse_caller_pattern("lib+", &p, &why));
  EXPECT_FALSE(parse_caller_pattern("lib+12", &p, &why));
  EXPECT_FALSE(parse_caller_pattern("lib+0x", &p, &why));
  EXPECT_FALSE(parse_caller_pattern("lib+0x10000000000000000", &p, &why));
}

TEST_F(Caller, MatchesItsOwnSymbol) {
  EXPECT_TRUE(mpk_cfg_test_frame_outer(pattern("mpk_cfg_test_frame_outer"), 0));
  EXPECT_TRUE(mpk_cfg_test_frame_outer(pattern("mpk_cfg_test_frame_*"), 0));
  EXPECT_FALSE(mpk_cfg_test_frame_outer(pattern("mpk_cfg_no_such_function_*"), 0));
}

TEST_F(Caller, SeesFramesFurtherUpIncludingStaticFunctions) {
  // A static function (not exported) two frames up, by its mangled name from .symtab.
  EXPECT_TRUE(mpk_cfg_test_static_frame(pattern("*mpk_cfg_test_static_frame*")));
  // The gtest body that called it is further up still.
  EXPECT_TRUE(mpk_cfg_test_static_frame(pattern("*Caller_SeesFramesFurtherUp*")));
}

TEST_F(Caller, ModuleForms) {
  std::string self = own_module();
  ASSERT_FALSE(self.empty());
  EXPECT_TRUE(mpk_cfg_test_frame_outer(pattern((self + "+*").c_str()), 0));
  EXPECT_TRUE(mpk_cfg_test_frame_outer(pattern("mpk_config_test?+*"), 0));
  EXPECT_FALSE(mpk_cfg_test_frame_outer(pattern("libnot-loaded.so*+*"), 0));

  // The start offset of a function that is on the stack, as nm shows it for a PIE.
  uintptr_t base = module_base_of(reinterpret_cast<void *>(&mpk_cfg_test_frame_outer));
  ASSERT_NE(base, 0u);
  char text[300];
  snprintf(text, sizeof text, "%s+0x%lx", self.c_str(),
           static_cast<unsigned long>(reinterpret_cast<uintptr_t>(&mpk_cfg_test_frame_outer) - base));
  EXPECT_TRUE(mpk_cfg_test_frame_outer(pattern(text), 0)) << text;
  // A function that is not on the stack does not match.
  snprintf(text, sizeof text, "%s+0x%lx", self.c_str(),
           static_cast<unsigned long>(reinterpret_cast<uintptr_t>(&mpk_cfg_test_thread_start) - base));
  EXPECT_FALSE(mpk_cfg_test_frame_outer(pattern(text), 0)) << text;
}

TEST_F(Caller, SkipsTheNamedModule) {
  uintptr_t base = module_base_of(reinterpret_cast<void *>(&mpk_cfg_test_frame_outer));
  EXPECT_FALSE(mpk_cfg_test_frame_outer(pattern("mpk_cfg_test_frame_outer"), base));
  // Frames of other modules (libc's __libc_start_call_main is below main) still count.
  EXPECT_TRUE(mpk_cfg_test_frame_outer(pattern("__libc_start*"), base));
}

TEST_F(Caller, RegionCallerIsCheckedLast) {
  Region r;
  r.match = kMatchProt | kMatchCaller;
  r.prot = PROT_READ;
  r.caller = pattern("*Caller_RegionCallerIsCheckedLast*");
  MappingInfo m;
  m.len = 4096;
  m.prot = PROT_READ;
  EXPECT_TRUE(region_matches(r, m));
  m.prot = PROT_WRITE;  // fails before the stack is looked at
  EXPECT_FALSE(region_matches(r, m));
}

TEST_F(SymbolAt, NamesStartRoutines) {
  char name[256];
  ASSERT_TRUE(symbol_at(reinterpret_cast<void *>(&mpk_cfg_test_frame_outer), name, sizeof name));
  EXPECT_STREQ(name, "mpk_cfg_test_frame_outer");
  ASSERT_TRUE(symbol_at(reinterpret_cast<void *>(&mpk_cfg_test_thread_start), name, sizeof name));
  EXPECT_TRUE(glob_match("*mpk_cfg_test_thread_start*", name, false)) << name;
  // Inside a function, not at its start: no name.
  EXPECT_FALSE(symbol_at(reinterpret_cast<char *>(&mpk_cfg_test_frame_outer) + 1, name, sizeof name));
  EXPECT_STREQ(name, "");
}

}  // namespace
}  // namespace mpk::cfg

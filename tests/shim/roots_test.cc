// Protected roots (core/src/roots.h): what decides rights cannot be changed by a stray write from
// the program. Each root in the shim's roots page, the metadata arena's allocator state, and this
// thread's record pointer are written from program code: the result is a fault or the end of the
// process, never a grant.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "../module_symbol.h"
#include "pkey_test_util.h"
#include "roots.h"
#include "shim_test_util.h"

namespace {

constexpr const char *kRootsSymbol = "_ZN3mpk7g_rootsE";  // mpk::g_roots
constexpr const char *kSelfSymbol = "_ZN3mpk6t_selfE";    // mpk::t_self

class Roots : public ::testing::Test {
 protected:
  void SetUp() override { mpkt::install_probe_handler(); }
};

TEST_F(Roots, EveryRootRefusesAWrite) {
  SHIM_SKIP_UNLESS_EMULATING();
  std::string why;
  auto *roots = static_cast<uint8_t *>(mpktest::module_symbol("libmpk_shim", kRootsSymbol, &why));
  ASSERT_NE(roots, nullptr) << why;
  // The roots as the engine sees them: the fields that are set, read before anything is written.
  const auto *r = reinterpret_cast<const mpk::Roots *>(roots);
  ASSERT_NE(r->state.load(), nullptr);
  ASSERT_GT(r->meta_key, 0);
  ASSERT_EQ(r->backend, mpk::Backend::kHardware);
  const size_t used = offsetof(mpk::Roots, isolated) + sizeof r->isolated;
  for (size_t off = 0; off < used; off += 4) {
    mpkt::Fault f;
    uint8_t before = roots[off];
    EXPECT_FALSE(mpkt::probe_write(roots + off, static_cast<uint8_t>(before ^ 0x5a), &f))
        << "the root at offset " << off << " took a write";
    EXPECT_EQ(roots[off], before);
  }
  // The arena's own allocator state sits under the metadata key (the shim reports a fault on its
  // keys to the program as the page table would: SEGV_ACCERR).
  auto *arena = reinterpret_cast<uint8_t *>(*reinterpret_cast<const uintptr_t *>(roots));
  EXPECT_EQ(mpkt::pkey_of(arena), r->meta_key);
  mpkt::Fault f;
  EXPECT_FALSE(mpkt::probe_write(arena, 1, &f)) << "the metadata arena took a write";
}

TEST(RootsChild, ForgedRecordPointerStopsTheProcess) {
  if (!getenv("MPK_SHIM_TEST_ROOTS")) GTEST_SKIP() << "the child of Roots.ForgedRecordPointerStopsTheProcess";
  shimt::Mapping m(2);
  shimt::Toggle(m, 4);
  std::string why;
  auto **self = static_cast<void **>(mpktest::module_symbol("libmpk_shim", kSelfSymbol, &why));
  ASSERT_NE(self, nullptr) << why;
  ASSERT_NE(*self, nullptr) << "this thread has a record after its mprotect calls";
  // A record of the program's making that would hold every right.
  alignas(64) static uint8_t forged[4096];
  std::memset(forged, 0xff, sizeof forged);
  *self = forged;
  mprotect(m.base(), m.bytes(), PROT_READ);
  std::printf("the engine used a forged record\n");
}

TEST_F(Roots, ForgedRecordPointerStopsTheProcess) {
  SHIM_SKIP_UNLESS_EMULATING();
  shimt::ChildResult c = shimt::RunSelf("RootsChild.*", {{"MPK_SHIM_TEST_ROOTS", "1"}});
  EXPECT_EQ(c.status, "killed by signal 4 (Illegal instruction)") << c.output;
  EXPECT_NE(c.output.find("record pointer"), std::string::npos) << c.output;
  EXPECT_EQ(c.output.find("the engine used a forged record"), std::string::npos) << c.output;
}

}  // namespace

// mremap of memory that was a page group next to memory the program mapped and wrote while the
// group was on its key (core/src/vma_join.h). Natively the two are one VMA and mremap moves them;
// under the shim they were two VMAs with different anon_vma, and mremap failed with EFAULT until
// the shim learnt to join them.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include "pkey_test_util.h"
#include "shim_test_util.h"

namespace {

constexpr size_t kPage = 4096;

// A PROT_NONE reservation that the test maps inside with MAP_FIXED, unmapped at scope exit.
struct Reservation {
  uint8_t *base;
  size_t bytes;
  explicit Reservation(size_t pages) : bytes(pages * kPage) {
    base = static_cast<uint8_t *>(mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  }
  ~Reservation() {
    if (base != MAP_FAILED) munmap(base, bytes);
  }
};

uint8_t *map_fixed(uint8_t *at, size_t pages) {
  void *p = mmap(at, pages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<uint8_t *>(p);
}

// Toggles [p, p+pages) as a program that the shim turns into a page group does.
void toggle(uint8_t *p, size_t pages, int times) {
  for (int i = 0; i < times; ++i) {
    ASSERT_EQ(mprotect(p, pages * kPage, PROT_READ), 0);
    ASSERT_EQ(mprotect(p, pages * kPage, PROT_READ | PROT_WRITE), 0);
  }
}

// Two pages `a` at the start of a reservation, written and toggled into a page group, then two
// pages `b` mapped right after them while the group is on its key: natively b merges with a and
// shares its anon_vma; under the shim it is a VMA of its own with its own once written.
class MremapJoin : public ::testing::Test {
 protected:
  void SetUp() override {
    mpkt::install_probe_handler();
    ASSERT_NE(res.base, MAP_FAILED);
    a = map_fixed(res.base, 2);
    ASSERT_NE(a, nullptr);
    a[10] = 0xa1;
    toggle(a, 2, 3);
    b = map_fixed(res.base + 2 * kPage, 2);
    ASSERT_NE(b, nullptr);
  }
  Reservation res{16};
  uint8_t *a = nullptr, *b = nullptr;
};

TEST_F(MremapJoin, GroupAndTheMemoryMappedBesideItMoveAsOne) {
  b[kPage + 20] = 0xb2;
  a[kPage + 30] = 0xa3;
  const uint64_t joins = shimt::emulating() ? shimt::counter(&mpk::Stats::vma_joins) : 0;

  // The pages after b are the reservation: the range cannot grow in place, it moves.
  void *q = mremap(a, 4 * kPage, 8 * kPage, MREMAP_MAYMOVE);
  ASSERT_NE(q, MAP_FAILED) << "errno " << errno << ": mremap of the group and its neighbour failed";
  auto *n = static_cast<uint8_t *>(q);
  EXPECT_EQ(mpkt::probe_read(n + 10), 0xa1);
  EXPECT_EQ(mpkt::probe_read(n + kPage + 30), 0xa3);
  EXPECT_EQ(mpkt::probe_read(n + 3 * kPage + 20), 0xb2);
  EXPECT_EQ(mpkt::probe_read(n + 7 * kPage), 0);  // the grown part
  EXPECT_TRUE(mpkt::probe_write(n + 2 * kPage, 5));
  if (shimt::emulating()) EXPECT_EQ(shimt::counter(&mpk::Stats::vma_joins), joins + 1);
  EXPECT_EQ(munmap(q, 8 * kPage), 0);
}

// Pieces the kernel keeps apart natively stay apart: the same layout with different permissions
// is two VMAs for the kernel too, and mremap fails with its EFAULT, nothing moved.
TEST_F(MremapJoin, PiecesWithDifferentPermissionsStayApart) {
  b[5] = 0x55;
  ASSERT_EQ(mprotect(b, 2 * kPage, PROT_READ), 0);
  errno = 0;
  EXPECT_EQ(mremap(a, 4 * kPage, 8 * kPage, MREMAP_MAYMOVE), MAP_FAILED);
  EXPECT_EQ(errno, EFAULT);
  EXPECT_EQ(mpkt::probe_read(b + 5), 0x55);
  EXPECT_TRUE(shimt::Has(b, PROT_READ));
}

}  // namespace

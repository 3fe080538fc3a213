// scale_test.cc - vkeys are unlimited: 10,000 one-page groups with varied permissions.
#include <sys/syscall.h>
#include <unistd.h>

#include <set>

#include "pkey_test_util.h"

using namespace mpkt;

namespace {
constexpr int kRotation[3] = {PROT_NONE, PROT_READ, RW};
}  // namespace

class Scale : public ::testing::Test {
 protected:
  void SetUp() override { MPK_HW_SETUP(50); }
  void TearDown() override {
    if (mpkt::pku_usable()) mpk_init(100);
  }
};

TEST_F(Scale, TenThousandVkeys) {
  constexpr int kGroups = 10000;
  mpkt::Watchdog wd(600, "Scale.TenThousandVkeys");
  std::vector<int> vkeys(kGroups);
  std::vector<uint8_t *> pages(kGroups);
  std::vector<int> prot(kGroups);
  for (int i = 0; i < kGroups; ++i) {
    vkeys[i] = mpkt::FreshVkey();
    void *p = mpk_mmap(vkeys[i], nullptr, mpkt::kPage, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED) << "group " << i << ": " << strerror(errno);
    pages[i] = static_cast<uint8_t *>(p);
    prot[i] = kRotation[(i * 7 + i / 3) % 3];  // varied, not in step with any cache order
  }
  // Fill each group, then set its permission.
  for (int i = 0; i < kGroups; ++i) {
    ASSERT_EQ(mpk_mprotect(vkeys[i], RW), 0) << "group " << i << ": " << strerror(errno);
    pages[i][0] = static_cast<uint8_t>(i);
    pages[i][1] = static_cast<uint8_t>(i >> 8);
    ASSERT_EQ(mpk_mprotect(vkeys[i], prot[i]), 0) << "group " << i << ": " << strerror(errno);
  }
  // All of them by probe (user mode and system calls), in the calling thread.
  int wrong = 0;
  for (int i = 0; i < kGroups; ++i) {
    int r = mpkt::probe_read(pages[i]);
    bool w = mpkt::probe_write(pages[i] + 2, 0x77);
    bool r_ok = r >= 0;
    bool bad = r_ok != bool(prot[i] & PROT_READ) || w != bool(prot[i] & PROT_WRITE) ||
               (mpkt::sys_read_access(pages[i] + 3) == 0) != bool(prot[i] & PROT_READ) ||
               (mpkt::sys_write_access(pages[i] + 3) == 0) != bool(prot[i] & PROT_WRITE) ||
               (r_ok && r != static_cast<uint8_t>(i));
    if (bad && ++wrong <= 10)
      ADD_FAILURE() << "group " << i << " (" << mpkt::prot_name(prot[i]) << "): read "
                    << (r_ok ? "ok" : "faulted") << ", write " << (w ? "ok" : "faulted")
                    << (r_ok && r != static_cast<uint8_t>(i) ? ", contents changed" : "");
  }
  EXPECT_EQ(wrong, 0) << "groups whose permission or contents were wrong";
  // A sample of each kind in full detail (faults, syscalls, PKRU by key), one smaps read.
  std::vector<int> sample;
  for (int i = 0; i < kGroups; i += 97) sample.push_back(i);
  std::vector<const void *> addrs;
  for (int i : sample) addrs.push_back(pages[i]);
  std::vector<int> keys = mpkt::pkeys_of(addrs);
  std::set<int> kinds;
  for (size_t j = 0; j < sample.size(); ++j) {
    int i = sample[j];
    kinds.insert(prot[i]);
    EXPECT_TRUE(HasExactly(pages[i] + 100, prot[i], PkruCheck::kAtMost, keys[j])) << "group " << i;
  }
  EXPECT_EQ(kinds.size(), 3u);
  // Another thread sees the same.
  Worker w;
  w.Run([&] {
    int wrong_other = 0;
    for (int i = 0; i < kGroups; ++i) {
      bool r_ok = mpkt::probe_read(pages[i]) >= 0;
      bool w_ok = mpkt::probe_write(pages[i] + 2, 0x66);
      bool s_ok = mpkt::sys_read_access(pages[i] + 3) == 0;
      if ((r_ok != bool(prot[i] & PROT_READ) || w_ok != bool(prot[i] & PROT_WRITE) ||
           s_ok != bool(prot[i] & PROT_READ)) &&
          ++wrong_other <= 10)
        ADD_FAILURE() << "other thread, group " << i << " (" << mpkt::prot_name(prot[i])
                      << "): read " << (r_ok ? "ok" : "faulted") << ", write "
                      << (w_ok ? "ok" : "faulted") << ", syscall read " << (s_ok ? "ok" : "EFAULT");
    }
    EXPECT_EQ(wrong_other, 0);
  });
  // Every vkey is still known and unmaps cleanly.
  for (int i = 0; i < kGroups; ++i) {
    ASSERT_EQ(mpk_munmap(vkeys[i]), 0) << "group " << i << ": " << strerror(errno);
  }
  for (int i = 0; i < kGroups; i += 499) EXPECT_FALSE(mpkt::is_mapped(pages[i]));
}

// Parsing /proc/self/maps lines, and reading the real file without allocating.
#include "proc_maps.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <string>
#include <vector>

namespace mpk {
namespace {

TEST(ProcMaps, ParsesAHeaderLine) {
  char line[] = "7f0000001000-7f0000003000 rw-s 00000000 00:17 10                         /tmp/e/cache";
  MappingLine m;
  ASSERT_TRUE(parse_mapping(line, &m));
  EXPECT_EQ(m.lo, 0x7f0000001000u);
  EXPECT_EQ(m.hi, 0x7f0000003000u);
  EXPECT_EQ(std::string(m.perms, 4), "rw-s");
  EXPECT_EQ(m.offset, 0u);
  EXPECT_EQ(m.dev, uint64_t{0} << 32 | 0x17);
  EXPECT_EQ(m.inode, 10u);
  EXPECT_STREQ(m.path, "/tmp/e/cache");
}

TEST(ProcMaps, ParsesOffsetDeviceAndInode) {
  char line[] = "7f0000001000-7f0000003000 r--p 0001f000 fe:01 1234567    /usr/lib/libx.so";
  MappingLine m;
  ASSERT_TRUE(parse_mapping(line, &m));
  EXPECT_EQ(m.offset, 0x1f000u);
  EXPECT_EQ(m.dev, uint64_t{0xfe} << 32 | 1);
  EXPECT_EQ(m.inode, 1234567u);
  EXPECT_STREQ(m.path, "/usr/lib/libx.so");
}

TEST(ProcMaps, AnonymousMappingHasNoPath) {
  char line[] = "55f234143000-55f234162000 rw-p 00000000 00:00 0 ";
  MappingLine m;
  ASSERT_TRUE(parse_mapping(line, &m));
  EXPECT_STREQ(m.path, "");
}

TEST(ProcMaps, AttributeLinesAreNotMappings) {
  char a[] = "ProtectionKey:         2";
  char b[] = "VmFlags: rd wr mr mw me ac sd";
  MappingLine m;
  EXPECT_FALSE(parse_mapping(a, &m));
  EXPECT_FALSE(parse_mapping(b, &m));
}

TEST(ProcMaps, ReadsTheProtectionKeyLine) {
  int key = -1;
  EXPECT_TRUE(parse_smaps_pkey("ProtectionKey:         2", &key));
  EXPECT_EQ(key, 2);
  EXPECT_TRUE(parse_smaps_pkey("ProtectionKey:        14", &key));
  EXPECT_EQ(key, 14);
  key = -1;
  EXPECT_FALSE(parse_smaps_pkey("VmFlags: rd wr mr mw me ac sd", &key));
  EXPECT_FALSE(parse_smaps_pkey("Protection", &key));
  EXPECT_EQ(key, -1);
}

TEST(ProcMaps, FindsAFreshMappingInTheRealFile) {
  void *p = mmap(nullptr, 3 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto a = reinterpret_cast<uintptr_t>(p);
  bool found = false;
  int lines = 0;
  ASSERT_TRUE(for_each_line("/proc/self/maps", [&](char *line) {
    ++lines;
    MappingLine m;
    if (parse_mapping(line, &m) && m.lo <= a && a + 3 * 4096 <= m.hi && m.perms[0] == 'r') found = true;
    return true;
  }));
  EXPECT_TRUE(found);
  EXPECT_GT(lines, 3);
  munmap(p, 3 * 4096);
  EXPECT_FALSE(for_each_line("/proc/self/no-such-file", [](char *) { return true; }));
}

// Three pages cut into three VMAs by permission (between inaccessible guard pages, so that no
// neighbour merges with them): each entry comes whole, in order, with its VmFlags; the walk stops
// where the callback says.
TEST(ProcMaps, WalksTheSmapsEntriesOfARange) {
  constexpr size_t kPage = 4096;
  void *p = mmap(nullptr, 5 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto a = reinterpret_cast<uintptr_t>(p) + kPage;
  ASSERT_EQ(mprotect(reinterpret_cast<void *>(a), 3 * kPage, PROT_READ | PROT_WRITE), 0);
  ASSERT_EQ(mprotect(reinterpret_cast<void *>(a + kPage), kPage, PROT_READ), 0);
  std::vector<SmapsVma> seen;
  ASSERT_TRUE(for_each_smaps_vma(a, a + 3 * kPage, [&](const SmapsVma &v) {
    seen.push_back(v);
    return true;
  }));
  ASSERT_EQ(seen.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(seen[i].lo, a + i * kPage);
    EXPECT_EQ(seen[i].hi, a + (i + 1) * kPage);
    EXPECT_TRUE(seen[i].anon_private);
    EXPECT_FALSE(seen[i].file_private);
    EXPECT_EQ(seen[i].pkey, 0);
    EXPECT_NE(std::strstr(seen[i].flags, "rd"), nullptr) << seen[i].flags;
  }
  EXPECT_EQ(std::string(seen[0].perms, 4), "rw-p");
  EXPECT_EQ(std::string(seen[1].perms, 4), "r--p");
  // A range that starts inside the middle VMA sees it and the last; a false return stops there.
  int calls = 0;
  ASSERT_TRUE(for_each_smaps_vma(a + kPage + 1, a + 3 * kPage, [&](const SmapsVma &v) {
    ++calls;
    EXPECT_EQ(v.lo, a + kPage);
    return false;
  }));
  EXPECT_EQ(calls, 1);
  munmap(p, 5 * kPage);
}

}  // namespace
}  // namespace mpk

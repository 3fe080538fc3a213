#include "shim_test_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

namespace shimt {

const mpk::StatsPage *stats() {
  static const mpk::StatsPage *page = [] () -> const mpk::StatsPage * {
    char path[64];
    std::snprintf(path, sizeof path, "/dev/shm/libmpk-%d.stats", getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nullptr;
    void *p = mmap(nullptr, sizeof(mpk::StatsPage), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? nullptr : static_cast<const mpk::StatsPage *>(p);
  }();
  return page;
}

bool emulating() { return stats() && stats()->active.load() != 0; }

uint64_t counter(const std::atomic<uint64_t> mpk::Stats::*which) {
  return stats() ? (stats()->counters.*which).load() : 0;
}

Mapping::Mapping(size_t pages, int prot) : bytes_(pages * 4096) {
  void *p = mmap(nullptr, bytes_, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    ADD_FAILURE() << "mmap: " << strerror(errno);
    return;
  }
  base_ = static_cast<uint8_t *>(p);
}

Mapping::~Mapping() {
  if (base_) EXPECT_EQ(munmap(base_, bytes_), 0);
}

void Toggle(const Mapping &m, int times) {
  for (int i = 0; i < times; ++i) {
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ), 0);
    ASSERT_EQ(mprotect(m.base(), m.bytes(), PROT_READ | PROT_WRITE), 0);
  }
}

}  // namespace shimt

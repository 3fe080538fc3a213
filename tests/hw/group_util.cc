// group_util.cc - the test helpers that use the libmpk API (pkey_test_util.h): groups and
// vkeys. Kept apart so that programs tested under the preload shim can share the other helpers
// without linking libmpk.
#include <mpk.h>

#include "pkey_test_util.h"

namespace mpkt {

int FreshVkey() {
  static std::atomic<int> next{1000};
  return next.fetch_add(1);
}

Group::Group(size_t pages, int prot, int vkey) : vkey_(vkey), pages_(pages) {
  errno = 0;
  void *p = mpk_mmap(vkey, nullptr, pages * kPage, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    ADD_FAILURE() << "mpk_mmap(" << vkey << ", " << pages << " pages, " << prot_name(prot)
                  << "): " << strerror(errno);
    return;
  }
  base_ = static_cast<uint8_t *>(p);
}

Group::~Group() {
  if (base_) mpk_munmap(vkey_);
}

void ExpectUnknownVkey(int v) {
  SCOPED_TRACE("vkey " + std::to_string(v));
  errno = 0;
  EXPECT_EQ(mpk_munmap(v), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(mpk_begin(v, PROT_READ), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(mpk_end(v), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(mpk_mprotect(v, PROT_READ), -1);
  EXPECT_EQ(errno, EINVAL);
}

}  // namespace mpkt

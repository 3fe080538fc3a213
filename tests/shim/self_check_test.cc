// The start-up self-check (core/src/self_check.h): when the kernel does not keep the PKRU edits the
// engine relies on, the shim does not emulate, says why in one line, and its statistics carry the
// reason. MPK_SELFCHECK_BREAK=1 makes the check's own handler drop its edits, as such a kernel would.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "shim_test_util.h"

namespace {

TEST(SelfCheckChild, RunsWithoutKeys) {
  if (!getenv("MPK_SHIM_TEST_SELFCHECK")) GTEST_SKIP() << "the child of SelfCheck.BrokenFrameEditsMeanPassThrough";
  EXPECT_FALSE(shimt::emulating()) << "the shim emulates although its self-check failed";
  // The program runs as without the shim: a toggled range stays on the page table.
  shimt::Mapping m(2);
  shimt::Toggle(m, 4);
  EXPECT_TRUE(shimt::Has(m.base(), PROT_READ | PROT_WRITE));
}

TEST(SelfCheck, BrokenFrameEditsMeanPassThrough) {
  SHIM_SKIP_UNLESS_EMULATING();
  std::string stats = std::string(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp") + "/selfcheck-stats.json";
  unlink(stats.c_str());
  shimt::ChildResult r = shimt::RunSelf(
      "SelfCheckChild.*", {{"MPK_SELFCHECK_BREAK", "1"}, {"MPK_SHIM_TEST_SELFCHECK", "1"}, {"MPK_STATS", stats}});
  EXPECT_EQ(r.status, "exit 0") << r.output;
  EXPECT_NE(r.output.find("self-check failed: an edit of the PKRU in a signal frame does not survive sigreturn"),
            std::string::npos)
      << r.output;
  std::ifstream in(stats);
  std::stringstream json;
  json << in.rdbuf();
  EXPECT_NE(json.str().find("\"active\":false"), std::string::npos) << json.str();
  EXPECT_NE(json.str().find("\"inactive_reason\":\"an edit of the PKRU in a signal frame does not survive"),
            std::string::npos)
      << json.str();
}

}  // namespace

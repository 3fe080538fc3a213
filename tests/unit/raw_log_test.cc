#include "raw_log.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "stats.h"

namespace mpk {
namespace {

TEST(RawLog, FormatsWithoutLibc) {
  char buf[128];
  format_to(buf, sizeof buf, "a %d b %u c %x d %s e %p f %zu %%", -42, 7u, 255u, "str",
            reinterpret_cast<void *>(0x1234), size_t{99});
  EXPECT_STREQ(buf, "a -42 b 7 c ff d str e 0x1234 f 99 %");
  format_to(buf, sizeof buf, "%ld %lu %s", -9000000000l, 18000000000ul, static_cast<const char *>(nullptr));
  EXPECT_STREQ(buf, "-9000000000 18000000000 (null)");
}

TEST(RawLog, TruncatesSafely) {
  char buf[8];
  int n = format_to(buf, sizeof buf, "%s", "0123456789");
  EXPECT_EQ(n, 7);
  EXPECT_STREQ(buf, "0123456");
}

TEST(Stats, JsonHasEveryCounter) {
  char buf[1 << 16];  // as stats_file_write()
  bump(stats().evictions, 3);
  stats_json(buf, sizeof buf, 5, 2, 13);
  std::string s(buf);
  EXPECT_EQ(s.front(), '{');
  EXPECT_EQ(s.back(), '}');
  EXPECT_NE(s.find("\"groups\":5"), std::string::npos);
  EXPECT_NE(s.find("\"hw_keys\":13"), std::string::npos);
  EXPECT_NE(s.find("\"evictions\":3"), std::string::npos);
#define MPK_CHECK_COUNTER(name, doc) EXPECT_NE(s.find("\"" #name "\":"), std::string::npos) << #name;
  MPK_COUNTERS(MPK_CHECK_COUNTER)
#undef MPK_CHECK_COUNTER
}

}  // namespace
}  // namespace mpk

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include "values.h"

namespace mpk::cfg {
namespace {

TEST(Values, Sizes) {
  uint64_t v = 0;
  EXPECT_TRUE(parse_size_text("4096", &v)); EXPECT_EQ(v, 4096u);
  EXPECT_TRUE(parse_size_text("64K", &v)); EXPECT_EQ(v, 65536u);
  EXPECT_TRUE(parse_size_text("64k", &v)); EXPECT_EQ(v, 65536u);
  EXPECT_TRUE(parse_size_text("3M", &v)); EXPECT_EQ(v, 3u << 20);
  EXPECT_TRUE(parse_size_text("1G", &v)); EXPECT_EQ(v, 1u << 30);
  EXPECT_TRUE(parse_size_text("2T", &v)); EXPECT_EQ(v, uint64_t{2} << 40);
  EXPECT_TRUE(parse_size_text("0", &v)); EXPECT_EQ(v, 0u);
  EXPECT_FALSE(parse_size_text("", &v));
  EXPECT_FALSE(parse_size_text("K", &v));
  EXPECT_FALSE(parse_size_text("64KB", &v));
  EXPECT_FALSE(parse_size_text("1.5M", &v));
  EXPECT_FALSE(parse_size_text(" 64K", &v));
  EXPECT_FALSE(parse_size_text("-1", &v));
  EXPECT_FALSE(parse_size_text("18446744073709551616", &v));  // 2^64
  EXPECT_TRUE(parse_size_text("18446744073709551615", &v));
  EXPECT_FALSE(parse_size_text("16777216T", &v));              // 2^64 bytes
}

TEST(Values, Prot) {
  int p = -1;
  EXPECT_TRUE(parse_prot_text("none", &p)); EXPECT_EQ(p, PROT_NONE);
  EXPECT_TRUE(parse_prot_text("r", &p)); EXPECT_EQ(p, PROT_READ);
  EXPECT_TRUE(parse_prot_text("xr", &p)); EXPECT_EQ(p, PROT_READ | PROT_EXEC);
  EXPECT_TRUE(parse_prot_text("rwx", &p)); EXPECT_EQ(p, PROT_READ | PROT_WRITE | PROT_EXEC);
  EXPECT_FALSE(parse_prot_text("", &p));
  EXPECT_FALSE(parse_prot_text("rr", &p));
  EXPECT_FALSE(parse_prot_text("R", &p));
  EXPECT_FALSE(parse_prot_text("r-x", &p));
}

TEST(Values, Signals) {
  int s = 0;
  EXPECT_TRUE(parse_signal_text("SIGRTMAX-2", &s)); EXPECT_EQ(s, SIGRTMAX - 2);
  EXPECT_TRUE(parse_signal_text("SIGRTMIN", &s)); EXPECT_EQ(s, SIGRTMIN);
  EXPECT_TRUE(parse_signal_text("RTMIN+4", &s)); EXPECT_EQ(s, SIGRTMIN + 4);
  EXPECT_TRUE(parse_signal_text("SIGRTMAX", &s)); EXPECT_EQ(s, SIGRTMAX);
  EXPECT_FALSE(parse_signal_text("SIGUSR1", &s));
  EXPECT_FALSE(parse_signal_text("SIGRTMAX-", &s));
  EXPECT_FALSE(parse_signal_text("SIGRTMAX*2", &s));
  EXPECT_FALSE(parse_signal_text("SIGRTMAX-2x", &s));
}

TEST(Values, Addresses) {
  uint64_t a = 0;
  EXPECT_TRUE(parse_address_text("0x7f0000000000", &a)); EXPECT_EQ(a, 0x7f0000000000u);
  EXPECT_TRUE(parse_address_text("0X7F_0000_0000", &a)); EXPECT_EQ(a, 0x7f00000000u);
  EXPECT_TRUE(parse_address_text("4096", &a)); EXPECT_EQ(a, 4096u);
  EXPECT_TRUE(parse_address_text("0xffffffffffffffff", &a)); EXPECT_EQ(a, ~uint64_t{0});
  EXPECT_FALSE(parse_address_text("0x1ffffffffffffffff", &a));
  EXPECT_FALSE(parse_address_text("0x", &a));
  EXPECT_FALSE(parse_address_text("0xg", &a));
  EXPECT_FALSE(parse_address_text("", &a));
  EXPECT_FALSE(parse_address_text("12ab", &a));
}

}  // namespace
}  // namespace mpk::cfg

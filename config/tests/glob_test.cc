#include <gtest/gtest.h>

#include <string>

#include "policy.h"

namespace mpk::cfg {
namespace {

bool path_glob(const char *p, const char *s) { return glob_match(p, s, true); }
bool name_glob(const char *p, const char *s) { return glob_match(p, s, false); }

TEST(Glob, Literals) {
  EXPECT_TRUE(name_glob("abc", "abc"));
  EXPECT_FALSE(name_glob("abc", "abcd"));
  EXPECT_FALSE(name_glob("abcd", "abc"));
  EXPECT_TRUE(name_glob("", ""));
  EXPECT_FALSE(name_glob("", "a"));
  EXPECT_FALSE(name_glob("ABC", "abc"));  // case-sensitive
}

TEST(Glob, StarAndQuestion) {
  EXPECT_TRUE(name_glob("*", ""));
  EXPECT_TRUE(name_glob("*", "anything"));
  EXPECT_TRUE(name_glob("lj_mcode_*", "lj_mcode_reserve"));
  EXPECT_TRUE(name_glob("lj_mcode_*", "lj_mcode_"));
  EXPECT_FALSE(name_glob("lj_mcode_*", "lj_mcod"));
  EXPECT_TRUE(name_glob("*_worker", "mc_worker"));
  EXPECT_TRUE(name_glob("a*b*c", "aXXbYYc"));
  EXPECT_TRUE(name_glob("a*b*c", "abc"));
  EXPECT_FALSE(name_glob("a*b*c", "aXXbYY"));
  EXPECT_TRUE(name_glob("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"));
  EXPECT_FALSE(name_glob("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
  EXPECT_TRUE(name_glob("w?rker", "worker"));
  EXPECT_FALSE(name_glob("w?rker", "wrker"));
  EXPECT_TRUE(name_glob("???", "abc"));
  EXPECT_FALSE(name_glob("???", "ab"));
}

TEST(Glob, Classes) {
  EXPECT_TRUE(name_glob("[abc]x", "bx"));
  EXPECT_FALSE(name_glob("[abc]x", "dx"));
  EXPECT_TRUE(name_glob("worker-[0-9]", "worker-7"));
  EXPECT_FALSE(name_glob("worker-[0-9]", "worker-a"));
  EXPECT_TRUE(name_glob("[!0-9]x", "ax"));
  EXPECT_FALSE(name_glob("[!0-9]x", "5x"));
  EXPECT_TRUE(name_glob("[^0-9]x", "ax"));
  EXPECT_TRUE(name_glob("[]]", "]"));         // ']' first is literal
  EXPECT_TRUE(name_glob("[!]]", "a"));
  EXPECT_FALSE(name_glob("[!]]", "]"));
  EXPECT_TRUE(name_glob("[a-]", "-"));        // '-' last is literal
  EXPECT_TRUE(name_glob("[a-cx-z]", "y"));
  EXPECT_FALSE(name_glob("[a-cx-z]", "m"));
  EXPECT_TRUE(name_glob("[", "["));           // unclosed: literal
  EXPECT_TRUE(name_glob("a[b", "a[b"));
}

TEST(Glob, Escapes) {
  EXPECT_TRUE(name_glob("a\\*b", "a*b"));
  EXPECT_FALSE(name_glob("a\\*b", "axb"));
  EXPECT_TRUE(name_glob("\\?", "?"));
  EXPECT_FALSE(name_glob("\\?", "x"));
  EXPECT_TRUE(name_glob("[\\]]", "]"));
}

TEST(Glob, SlashIsSpecialForPaths) {
  EXPECT_TRUE(path_glob("/var/cache/*.dat", "/var/cache/a.dat"));
  EXPECT_FALSE(path_glob("/var/cache/*.dat", "/var/cache/sub/a.dat"));
  EXPECT_FALSE(path_glob("/var/?", "/var//"));
  EXPECT_FALSE(path_glob("/var[/]x", "/var/x"));
  EXPECT_TRUE(path_glob("/var/**.dat", "/var/cache/sub/a.dat"));
  EXPECT_TRUE(path_glob("/var/**/a.dat", "/var/cache/sub/a.dat"));
  EXPECT_TRUE(path_glob("/var/**/a.dat", "/var/a.dat"));  // "/**/" may be a single '/'
  EXPECT_TRUE(path_glob("**/a.dat", "a.dat"));
  EXPECT_TRUE(path_glob("**/a.dat", "/x/y/a.dat"));
  EXPECT_FALSE(path_glob("/var/**/a.dat", "/var/cache/b.dat"));
  EXPECT_TRUE(path_glob("/**", "/anything/at/all"));
  EXPECT_FALSE(path_glob("/x*/**/y", "/a/b/y"));
  EXPECT_TRUE(path_glob("/x*/**/y", "/xa/b/y"));
  // Without slash_special, '/' is an ordinary character and "**" is '*'.
  EXPECT_TRUE(name_glob("/var/*.dat", "/var/cache/sub/a.dat"));
  EXPECT_TRUE(name_glob("kworker/*", "kworker/0:1"));
}

TEST(Glob, LimitsAndNulls) {
  EXPECT_FALSE(glob_match(nullptr, "a", false));
  EXPECT_FALSE(glob_match("a", nullptr, false));
  std::string long_pattern(kGlobMaxPattern, 'a');
  std::string text(kGlobMaxPattern, 'a');
  EXPECT_TRUE(name_glob(long_pattern.c_str(), text.c_str()));
  long_pattern += 'a';
  text += 'a';
  EXPECT_FALSE(name_glob(long_pattern.c_str(), text.c_str()));  // too long: never matches
  // Many stars against a long near-miss stays fast (no backtracking blow-up).
  std::string stars;
  for (int i = 0; i < 100; ++i) stars += "*a";
  stars += "b";
  std::string as(4000, 'a');
  EXPECT_FALSE(name_glob(stars.c_str(), as.c_str()));
}

}  // namespace
}  // namespace mpk::cfg

// load_policy_text(): policy text from memory, exactly as load_policy() reads a file.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>

#include "policy_text.h"

namespace mpk::cfg {
namespace {

struct FromText {
  std::unique_ptr<Policy> policy{new Policy};
  bool ok = false;
  std::string error;
};

FromText from_text(const std::string &text, const char *name = "inline.toml") {
  FromText t;
  static char err[8192];  // room for the longest name and a message
  t.ok = load_policy_text(name, text.data(), text.size(), t.policy.get(), err, sizeof err);
  t.error = err;
  return t;
}

void expect_same(const Policy &a, const Policy &b, const std::string &what) {
  EXPECT_EQ(a.settings.mode, b.settings.mode) << what;
  EXPECT_EQ(a.settings.on_error, b.settings.on_error) << what;
  EXPECT_EQ(a.settings.key_budget, b.settings.key_budget) << what;
  EXPECT_EQ(a.settings.evict_rate, b.settings.evict_rate) << what;
  EXPECT_EQ(a.settings.promote_after, b.settings.promote_after) << what;
  EXPECT_EQ(a.settings.sync_signal, b.settings.sync_signal) << what;
  EXPECT_EQ(a.settings.log_to_stderr, b.settings.log_to_stderr) << what;
  EXPECT_STREQ(a.settings.log_path, b.settings.log_path) << what;
  ASSERT_EQ(a.region_count, b.region_count) << what;
  for (int i = 0; i < a.region_count; ++i) {
    const Region &x = a.regions[i], &y = b.regions[i];
    EXPECT_STREQ(x.name, y.name) << what;
    EXPECT_EQ(x.line, y.line) << what;
    EXPECT_EQ(x.match, y.match) << what;
    EXPECT_STREQ(x.path, y.path) << what;
    EXPECT_EQ(x.min_size, y.min_size) << what;
    EXPECT_EQ(x.max_size, y.max_size) << what;
    EXPECT_EQ(x.prot, y.prot) << what;
    EXPECT_EQ(x.addr_lo, y.addr_lo) << what;
    EXPECT_EQ(x.addr_hi, y.addr_hi) << what;
    EXPECT_STREQ(x.caller.glob, y.caller.glob) << what;
    EXPECT_EQ(x.action, y.action) << what;
    EXPECT_EQ(x.promote_after, y.promote_after) << what;
    EXPECT_EQ(x.exec, y.exec) << what;
    EXPECT_EQ(x.grants, y.grants) << what;
    EXPECT_EQ(x.default_right, y.default_right) << what;
    EXPECT_EQ(x.mode, y.mode) << what;
    ASSERT_EQ(x.thread_rule_count, y.thread_rule_count) << what;
    for (int t = 0; t < x.thread_rule_count; ++t) {
      EXPECT_STREQ(x.threads[t].name, y.threads[t].name) << what;
      EXPECT_STREQ(x.threads[t].start, y.threads[t].start) << what;
      EXPECT_EQ(x.threads[t].right, y.threads[t].right) << what;
    }
  }
}

std::string read_all(const std::string &path) {
  std::string s;
  FILE *f = fopen(path.c_str(), "rb");
  if (!f) return s;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  fclose(f);
  return s;
}

TEST(LoadText, TheExamplesLoadAsFromTheirFiles) {
  for (const char *name : {"default.toml", "isolate.toml", "luajit.toml", "memcached.toml", "php-opcache.toml",
                           "sysbench.toml"}) {
    std::string path = std::string(MPK_CONFIG_EXAMPLES_DIR) + "/" + name;
    std::string text = read_all(path);
    ASSERT_FALSE(text.empty()) << path;
    auto file = test::load_file(path);
    auto mem = from_text(text, path.c_str());
    ASSERT_TRUE(file.ok) << file.error;
    ASSERT_TRUE(mem.ok) << mem.error;
    EXPECT_STREQ(mem.policy->source, path.c_str());
    expect_same(*file.policy, *mem.policy, name);
  }
}

TEST(LoadText, ErrorsNameTheGivenName) {
  std::string bad = read_all(std::string(MPK_CONFIG_TESTDATA_DIR) + "/bad_unknown_key.toml");
  auto t = from_text(bad);
  EXPECT_FALSE(t.ok);
  EXPECT_EQ(t.error.rfind("inline.toml:7:1: unknown key 'sizee' in [[region]] 'jit'", 0), 0u) << t.error;
  auto f = test::load_file(std::string(MPK_CONFIG_TESTDATA_DIR) + "/bad_unknown_key.toml");
  EXPECT_EQ(t.error.substr(strlen("inline.toml")), f.error.substr(strlen("bad_unknown_key.toml")));
}

TEST(LoadText, OnlyTheGivenLengthIsRead) {
  std::string text = "mode = \"audit\"\nkey_budget = 99\n";
  char err[256];
  auto p = std::make_unique<Policy>();
  // The first line alone: the invalid second line is past the length.
  ASSERT_TRUE(load_policy_text("inline.toml", text.data(), 15, p.get(), err, sizeof err)) << err;
  EXPECT_EQ(p->settings.mode, Mode::kAudit);
  EXPECT_EQ(p->settings.key_budget, 13);
  // No text at all is an empty file: the defaults.
  ASSERT_TRUE(load_policy_text("inline.toml", nullptr, 0, p.get(), err, sizeof err)) << err;
  EXPECT_EQ(p->settings.mode, Mode::kEnforce);
  EXPECT_STREQ(p->source, "inline.toml");
}

TEST(LoadText, LimitsAreThoseOfAFile) {
  std::string big((1 << 20) + 1, '#');
  auto t = from_text(big);
  EXPECT_FALSE(t.ok);
  EXPECT_EQ(t.error, "inline.toml: larger than 1048576 bytes: not a policy file");
  std::string comment(1 << 20, ' ');
  comment[0] = '#';
  EXPECT_TRUE(from_text(comment).ok);

  EXPECT_EQ(from_text("", "").error, "(no file): the configuration path is empty");
  std::string long_name(kSourcePathMax + 1, 'n');
  EXPECT_EQ(from_text("", long_name.c_str()).error, long_name + ": path longer than 4095 characters");
}

TEST(LoadText, OnErrorIsKeptAsFromAFile) {
  auto t = from_text("on_error = \"passthrough\"\nmode = = \n");
  EXPECT_FALSE(t.ok);
  EXPECT_EQ(t.policy->settings.on_error, OnError::kPassthrough);
}

}  // namespace
}  // namespace mpk::cfg

// Every file in config/examples/ is a valid policy, and the documented ones say what they claim.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "policy_text.h"

namespace mpk::cfg {
namespace {

std::vector<std::string> example_files() {
  std::vector<std::string> files;
  DIR *d = opendir(MPK_CONFIG_EXAMPLES_DIR);
  if (!d) return files;
  while (dirent *e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 5 && n.compare(n.size() - 5, 5, ".toml") == 0) files.push_back(n);
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  return files;
}

test::Loaded load_example(const char *name) {
  return test::load_file(std::string(MPK_CONFIG_EXAMPLES_DIR) + "/" + name);
}

TEST(Examples, AllParse) {
  auto files = example_files();
  ASSERT_GE(files.size(), 5u);
  for (const auto &f : files) {
    auto l = load_example(f.c_str());
    EXPECT_TRUE(l.ok) << f << ": " << l.error;
  }
}

TEST(Examples, DefaultSpellsOutTheDefaults) {
  auto l = load_example("default.toml");
  ASSERT_TRUE(l.ok) << l.error;
  auto d = std::make_unique<Policy>();
  init_defaults(d.get());
  const Settings &s = l.policy->settings, &ds = d->settings;
  EXPECT_EQ(s.mode, ds.mode);
  EXPECT_EQ(s.on_error, ds.on_error);
  EXPECT_EQ(s.key_budget, ds.key_budget);
  EXPECT_EQ(s.evict_rate, ds.evict_rate);
  EXPECT_EQ(s.promote_after, ds.promote_after);
  EXPECT_EQ(s.sync_signal, ds.sync_signal);
  EXPECT_EQ(s.log_to_stderr, ds.log_to_stderr);
  EXPECT_EQ(l.policy->region_count, 0);
}

TEST(Examples, PhpOpcacheMatchesItsSegment) {
  auto l = load_example("php-opcache.toml");
  ASSERT_TRUE(l.ok) << l.error;
  MappingInfo shm;
  shm.addr = 0x7f0000000000;
  shm.len = 128u << 20;
  shm.prot = PROT_READ | PROT_WRITE;
  shm.flags = MAP_SHARED | MAP_ANONYMOUS;
  const Region *r = match_region(*l.policy, shm);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->action, Action::kEmulate);
  EXPECT_EQ(r->promote_after, 1);
  shm.flags = MAP_PRIVATE | MAP_ANONYMOUS;
  EXPECT_EQ(match_region(*l.policy, shm), nullptr);
}

TEST(Examples, IsolateGivesTheDocumentedRights) {
  auto l = load_example("isolate.toml");
  ASSERT_TRUE(l.ok) << l.error;
  const Region *slabs = nullptr;
  for (int i = 0; i < l.policy->region_count; ++i)
    if (strcmp(l.policy->regions[i].name, "memcached-slabs") == 0) slabs = &l.policy->regions[i];
  ASSERT_NE(slabs, nullptr);
  EXPECT_EQ(slabs->action, Action::kIsolate);
  EXPECT_EQ(slabs->mode, Mode::kAudit);
  EXPECT_EQ(thread_right(*slabs, "mc-worker", nullptr), kRightReadWrite);
  EXPECT_EQ(thread_right(*slabs, "memcached", "worker_libevent"), kRightReadWrite);
  EXPECT_EQ(thread_right(*slabs, "mc-lrumaint", nullptr), kRightRead);
  EXPECT_EQ(thread_right(*slabs, "memcached", "main"), kRightNone);
}

}  // namespace
}  // namespace mpk::cfg

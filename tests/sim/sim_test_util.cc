// sim_test_util.cc - init, groups, key discovery, statistics and /proc readers for mpk_sim_tests.
#include "sim_test_util.h"

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "engine.h"
#include "raw_log.h"

namespace simt {

namespace {
constexpr int kTestSeconds = 300;  // per test; a hang ends the process with SIGALRM

char g_running[256];  // "Suite.Name" of the test under way, for the alarm's message

// A test that outlives its alarm: say which one and how far the engine got (its counters, read
// without a lock), so that a slow machine and a stuck sync can be told apart; then the default
// action ends the process.
void on_alarm(int) {
  static char buf[8192];
  int n = mpk::format_to(buf, sizeof buf, "mpk_sim_tests: %s still running after %d s; counters: ", g_running,
                         kTestSeconds);
  n += mpk::stats_json(buf + n, static_cast<int>(sizeof buf) - n, 0, 0, 0);
  if (n < static_cast<int>(sizeof buf) - 1) buf[n++] = '\n';
  if (write(2, buf, static_cast<size_t>(n)) < 0) {
  }
  signal(SIGALRM, SIG_DFL);
  raise(SIGALRM);
}
}  // namespace

bool init(std::string *why) {
  static int rc = -1, err = 0;
  static bool done = false;
  if (!done) {
    errno = 0;
    rc = mpk_init(100);
    err = errno;
    done = true;
  }
  if (rc == 0) return true;
  if (err == ENOTSUP)
    *why = "no protection keys here: run with MPK_SIMULATE=1 (ctest sets it)";
  else
    *why = std::string("mpk_init(100) failed: ") + strerror(err);
  return false;
}

void SimTest::SetUp() {
  std::string why;
  if (!init(&why)) {
    if (getenv("MPK_SIMULATE")) FAIL() << why;  // asked for simulation: it must work
    GTEST_SKIP() << why;
  }
  const ::testing::TestInfo *t = ::testing::UnitTest::GetInstance()->current_test_info();
  mpk::format_to(g_running, sizeof g_running, "%s.%s", t->test_suite_name(), t->name());
  signal(SIGALRM, on_alarm);
  alarm(kTestSeconds);
}

void SimTest::TearDown() { alarm(0); }

const char *name(mpk::Rights r) {
  switch (r) {
    case mpk::Rights::kNone: return "NONE";
    case mpk::Rights::kRead: return "READ";
    default: return "READ|WRITE";
  }
}

void spin_pause() {
  sched_yield();
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
}

int fresh_vkey() {
  static std::atomic<int> next{1000};
  return next.fetch_add(1);
}

Group::Group(size_t pages, int ceiling, int vkey) : vkey_(vkey), pages_(pages) {
  void *p = mpk_mmap(vkey, nullptr, pages * kPage, ceiling, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    ADD_FAILURE() << "mpk_mmap(" << vkey << "): " << strerror(errno);
    return;
  }
  base_ = static_cast<uint8_t *>(p);
}

Group::~Group() {
  if (base_) {
    EXPECT_EQ(mpk_munmap(vkey_), 0) << "mpk_munmap(" << vkey_ << "): " << strerror(errno);
  }
}

int key_of(int vkey) {
  uint32_t before = mpk::rdpkru();
  if (mpk_mprotect(vkey, PROT_READ) != 0) return 0;
  uint32_t after = mpk::rdpkru();
  int key = 0;
  for (int k = 1; k < mpk::kHwKeys; ++k) {
    if (mpk::pkru_rights(before, k) == mpk::Rights::kNone && mpk::pkru_rights(after, k) == mpk::Rights::kRead) {
      if (key) key = -1;  // two keys changed: ambiguous
      else key = k;
    }
  }
  if (mpk_mprotect(vkey, PROT_NONE) != 0) return 0;
  return key > 0 ? key : 0;
}

int domain_key(int v, int open) {
  uint32_t candidates = 0xfffe;
  for (int i = 0; i < 64 && (candidates & (candidates - 1)); ++i) {
    if (mpk_begin(v, PROT_NONE) != 0) return 0;
    uint32_t closed_pkru = mpk::rdpkru();
    if (mpk_begin(v, open) != 0) return 0;
    uint32_t open_pkru = mpk::rdpkru();
    uint32_t followed = 0;
    for (int k = 1; k < mpk::kHwKeys; ++k)
      if (mpk::pkru_rights(closed_pkru, k) == mpk::Rights::kNone && mpk::pkru_rights(open_pkru, k) == rights_of(open))
        followed |= 1u << k;
    candidates &= followed;
  }
  return candidates && !(candidates & (candidates - 1)) ? __builtin_ctz(candidates) : 0;
}

std::string stats_json() {
  std::string buf(1 << 16, '\0');
  int n = mpk::engine_stats_json(buf.data(), static_cast<int>(buf.size()));
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

uint64_t stat(const char *name) {
  std::string json = stats_json();
  std::string key = std::string("\"") + name + "\":";
  size_t at = json.find(key);
  if (at == std::string::npos) {
    ADD_FAILURE() << "no \"" << name << "\" in the statistics: " << json;
    return 0;
  }
  return std::strtoull(json.c_str() + at + key.size(), nullptr, 10);
}

std::string stat_text(const char *name) {
  std::string json = stats_json();
  std::string key = std::string("\"") + name + "\":\"";
  size_t at = json.find(key);
  if (at == std::string::npos) return "";
  size_t start = at + key.size();
  return json.substr(start, json.find('"', start) - start);
}


::testing::AssertionResult GroupPair::ready() {
  if (!g.ok() || !d.ok()) return ::testing::AssertionFailure() << "mpk_mmap failed";
  key = key_of(g.vkey());
  dkey = key_of(d.vkey());
  if (key <= 0 || dkey <= 0) return ::testing::AssertionFailure() << "no key found: " << key << ", " << dkey;
  right.settled(PROT_NONE, key);
  return ::testing::AssertionSuccess();
}

PublishedRight::Result PublishedRight::check() const {
  uint64_t s1 = state_.load(std::memory_order_seq_cst);
  uint32_t pkru = mpk::rdpkru();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  uint64_t s2 = state_.load(std::memory_order_seq_cst);
  int key = static_cast<int>((s1 >> 2) & 0x3f);
  if (s1 != s2 || (s1 & 3) == kChanging || key <= 0 || key >= mpk::kHwKeys)
    return {Check::kDiscarded, s1, key, mpk::Rights::kNone, mpk::Rights::kNone};
  auto want = static_cast<mpk::Rights>(s1 & 3);
  mpk::Rights got = mpk::pkru_rights(pkru, key);
  return {got == want ? Check::kOk : Check::kStale, s1, key, want, got};
}

PinResult pin_until_failure(const std::vector<int> &vkeys) {
  PinResult r;
  for (int v : vkeys) {
    errno = 0;
    if (mpk_begin(v, PROT_READ) != 0) {
      r.err = errno;
      break;
    }
    ++r.pinned;
  }
  return r;
}

void end_first(const std::vector<int> &vkeys, int n) {
  for (int i = 0; i < n; ++i) EXPECT_EQ(mpk_end(vkeys[i]), 0) << "mpk_end(" << vkeys[i] << "): " << strerror(errno);
}

}  // namespace simt

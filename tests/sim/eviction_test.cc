// eviction_test.cc - more groups than hardware keys, four threads calling mpk_mprotect, mpk_begin
// and mpk_end on random groups: groups are evicted and reloaded under the threads' feet. Every
// call answers as README "The API" says, an open domain keeps its right whatever happens to its
// group, no right exceeds a group's ceiling, and EBUSY comes only when every key is pinned.
#include <algorithm>
#include <cerrno>
#include <memory>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "sim_test_util.h"

using namespace simt;

namespace {

class SimEviction : public SimTest {};

constexpr int kGroups = 40;

int ceiling_of(int i) {
  if (i % 3 == 0) return PROT_READ;
  if (i % 5 == 0) return RW | PROT_EXEC;
  return RW;
}

TEST_F(SimEviction, RandomCallsOnMoreGroupsThanKeys) {
  constexpr int kThreads = 4, kOps = 2500, kMaxDomains = 2;  // at most 8 pins: never EBUSY
  std::vector<std::unique_ptr<Group>> groups;
  for (int i = 0; i < kGroups; ++i) {
    groups.push_back(std::make_unique<Group>(1 + i % 3, ceiling_of(i)));
    ASSERT_TRUE(groups.back()->ok());
  }
  const int hw_keys = static_cast<int>(stat("hw_keys"));
  ASSERT_GT(hw_keys, 0);
  ASSERT_LT(hw_keys, kGroups);
  ASSERT_GT(hw_keys, kThreads * kMaxDomains) << "this test needs more keys than it pins at once";
  uint64_t evictions0 = stat("evictions");
  const int unknown_vkey = fresh_vkey();

  std::vector<std::vector<std::string>> failures(kThreads);
  std::atomic<uint64_t> discarded{0};
  const uint64_t fallbacks0 = fallbacks();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(777 + t);
      struct Domain {
        int v, prot, key;
      };
      std::vector<Domain> domains;
      // A sync that fell back (sim_test_util.h: fallbacks()) ends the domains on its group: then
      // this thread's domains are closed and forgotten, and the check is discarded.
      uint64_t model_good = fallbacks();
      auto resync = [&] {
        discarded.fetch_add(1);
        do {
          model_good = fallbacks();
          for (const Domain &d : domains) mpk_end(d.v);
        } while (fallbacks() != model_good);
        domains.clear();
      };
      auto fail = [&](int op, const std::string &what) {
        if (fallbacks() != model_good) return resync();
        if (failures[t].size() < 10) failures[t].push_back("op " + std::to_string(op) + ": " + what);
      };
      auto expect_errno = [&](int op, const char *call, int rc, int err) {
        if (rc != -1 || errno != err) {
          std::ostringstream m;
          m << call << " returned " << rc << " errno " << errno << " (" << strerror(errno) << "), expected -1 errno "
            << err << " (" << strerror(err) << ")";
          fail(op, m.str());
        }
      };
      static const int kProcessProts[] = {PROT_NONE, PROT_READ, RW, PROT_READ | PROT_EXEC, RW | PROT_EXEC};
      static const int kDomainProts[] = {PROT_NONE, PROT_READ, RW};
      for (int op = 0; op < kOps; ++op) {
        int gi = static_cast<int>(rng() % kGroups);
        int v = groups[gi]->vkey(), ceiling = ceiling_of(gi);
        auto open = std::find_if(domains.begin(), domains.end(), [&](const Domain &d) { return d.v == v; });
        unsigned what = rng() % 10;
        before_call();
        errno = 0;
        if (what < 4) {
          int prot = kProcessProts[rng() % 5];
          int rc = mpk_mprotect(v, prot);
          if ((prot & ~ceiling) != 0) expect_errno(op, "mpk_mprotect above the ceiling", rc, EACCES);
          else if (rc != 0) fail(op, std::string("mpk_mprotect: ") + strerror(errno));
        } else if (what < 7) {
          int prot = kDomainProts[rng() % 3];
          if (open == domains.end() && static_cast<int>(domains.size()) == kMaxDomains) {
            if (mpk_end(domains.front().v) != 0) fail(op, std::string("mpk_end: ") + strerror(errno));
            domains.erase(domains.begin());
            continue;
          }
          int rc = mpk_begin(v, prot);
          if ((prot & ~ceiling) != 0) {
            expect_errno(op, "mpk_begin above the ceiling", rc, EACCES);
          } else if (rc != 0) {
            fail(op, std::string("mpk_begin with at most ") + std::to_string(kThreads * kMaxDomains) +
                         " domains open in the process: " + strerror(errno));
          } else if (open != domains.end()) {
            open->prot = prot;
          } else {
            int key = domain_key(v, ceiling & RW);
            if (!key) {
              fail(op, "cannot find the key of an open domain");
              mpk_end(v);
              continue;
            }
            for (const Domain &d : domains)
              if (d.key == key) fail(op, "two open domains of this thread share key " + std::to_string(key));
            if (mpk_begin(v, prot) != 0) fail(op, std::string("mpk_begin again: ") + strerror(errno));
            domains.push_back({v, prot, key});
          }
        } else if (what < 9) {
          int rc = mpk_end(v);
          if (open != domains.end()) {
            if (rc != 0) fail(op, std::string("mpk_end of an open domain: ") + strerror(errno));
            domains.erase(open);
          } else {
            expect_errno(op, "mpk_end without a domain", rc, EINVAL);
          }
        } else {
          expect_errno(op, "mpk_begin(PROT_EXEC)", mpk_begin(v, PROT_READ | PROT_EXEC), EINVAL);
          expect_errno(op, "mpk_begin(negative vkey)", mpk_begin(-1, PROT_READ), EINVAL);
          expect_errno(op, "mpk_mprotect(unknown vkey)", mpk_mprotect(unknown_vkey, PROT_READ), EINVAL);
          expect_errno(op, "mpk_end(unknown vkey)", mpk_end(unknown_vkey), EINVAL);
          expect_errno(op, "mpk_mprotect(bad prot)", mpk_mprotect(v, 0x100), EINVAL);
        }
        // Open domains keep exactly their right: their groups are pinned, never evicted, and the
        // other threads' calls (loads, evictions, syncs) leave these keys alone.
        for (size_t i = 0; i < domains.size(); ++i) {
          const Domain &d = domains[i];
          mpk::Rights got = own_rights(d.key);
          if (fallbacks() != model_good) {
            resync();
            break;
          }
          if (got != rights_of(d.prot)) {
            std::ostringstream m;
            m << "domain on vkey " << d.v << " (key " << d.key << ") gives " << name(got) << ", expected "
              << name(rights_of(d.prot));
            fail(op, m.str());
          }
        }
      }
      for (const Domain &d : domains)
        if (mpk_end(d.v) != 0) fail(kOps, std::string("final mpk_end: ") + strerror(errno));
    });
  }
  for (auto &t : threads) t.join();
  for (int t = 0; t < kThreads; ++t)
    for (const std::string &f : failures[t]) ADD_FAILURE() << "thread " << t << ", " << f;
  EXPECT_GT(stat("evictions"), evictions0) << "the test never evicted a group";
  RecordProperty("discarded_checks", static_cast<int>(discarded.load()));
  if (kUnderTsan) {
    EXPECT_LE(discarded.load(), uint64_t{kThreads * kOps / 20}) << "operations whose check a fallback voided";
  } else {
    EXPECT_EQ(fallbacks(), fallbacks0) << "syncs that fell back to the page table";
  }

  // All keys pinned, one thread: the next mpk_begin is EBUSY, and only then. (A load whose sync
  // fell back is EBUSY too: under ThreadSanitizer such a run is not counted.)
  uint64_t f_pins = fallbacks();
  std::vector<int> vkeys;
  for (auto &g : groups) vkeys.push_back(g->vkey());
  PinResult pins = pin_until_failure(vkeys);
  const bool counted = !kUnderTsan || fallbacks() == f_pins;
  if (counted) {
    EXPECT_EQ(pins.pinned, hw_keys);
    EXPECT_EQ(pins.err, EBUSY) << strerror(pins.err);
  }
  if (counted && pins.pinned > 0 && pins.pinned < kGroups) {
    errno = 0;
    EXPECT_EQ(mpk_begin(vkeys[pins.pinned], PROT_READ), -1);
    EXPECT_EQ(errno, EBUSY);
    ASSERT_EQ(mpk_end(vkeys[0]), 0);  // one key unpinned: the group that failed can have it
    EXPECT_EQ(mpk_begin(vkeys[pins.pinned], PROT_READ), 0) << strerror(errno);
    EXPECT_EQ(mpk_end(vkeys[pins.pinned]), 0);
    vkeys.erase(vkeys.begin());
    --pins.pinned;
  }
  end_first(vkeys, pins.pinned);

  // The same from four threads at once, each on its own groups until its first failure: every
  // failure is EBUSY, and when all have failed every key is pinned, none twice.
  std::vector<PinResult> results(kThreads);
  std::vector<std::vector<int>> slices(kThreads);
  for (int i = 0; i < kGroups; ++i) slices[i % kThreads].push_back(groups[i]->vkey());
  threads.clear();
  f_pins = fallbacks();
  std::atomic<int> done{0};
  std::atomic<bool> release{false};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      results[t] = pin_until_failure(slices[t]);
      done.fetch_add(1);
      while (!release.load()) spin_pause();
      end_first(slices[t], results[t].pinned);
    });
  }
  while (done.load() < kThreads) spin_pause();
  int total = 0;
  for (int t = 0; t < kThreads; ++t) {
    total += results[t].pinned;
    if (results[t].err) {
      EXPECT_EQ(results[t].err, EBUSY) << "thread " << t << ": " << strerror(results[t].err);
    }
  }
  if (!kUnderTsan || fallbacks() == f_pins) {
    EXPECT_EQ(total, hw_keys) << "domains open when every thread had failed";
  }
  release.store(true);
  for (auto &t : threads) t.join();
}

}  // namespace

// domains_test.cc - mpk_begin/mpk_end/mpk_mprotect in four threads at once, each on its own
// group: after every call the calling thread's register gives exactly its domain's right, or the
// group's process-wide right when it has no domain, while the other threads' calls signal it.
#include <pthread.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "sim_test_util.h"

using namespace simt;

namespace {

class SimDomains : public SimTest {};

struct Failure {
  int op;
  std::string what;
};

TEST_F(SimDomains, FourThreadsOnTheirOwnGroups) {
  constexpr int kThreads = 4, kOps = 4000;
  std::vector<std::unique_ptr<Group>> groups;
  std::vector<int> keys;
  for (int i = 0; i < kThreads; ++i) {
    groups.push_back(std::make_unique<Group>(2, RW));
    ASSERT_TRUE(groups.back()->ok());
    keys.push_back(key_of(groups.back()->vkey()));
    ASSERT_GT(keys.back(), 0) << "group " << i << " is not in a hardware key";
    for (int j = 0; j < i; ++j) ASSERT_NE(keys[j], keys[i]) << "two resident groups share a key";
  }
  EXPECT_EQ(stat_text("backend"), getenv("MPK_SIMULATE") ? "simulated" : "hardware");

  uint64_t wrpkru0 = stat("wrpkru"), signals0 = stat("revocation_signals"), fallbacks0 = fallbacks();
  std::atomic<uint64_t> calls{0}, discarded{0};
  std::vector<std::vector<Failure>> failures(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int v = groups[t]->vkey();
      int key = keys[t];
      std::mt19937 rng(1234 + t);
      int domain = -1;            // this thread's open domain on v (a PROT_* value), -1 none
      int process_prot = PROT_NONE;  // v's process-wide right: only this thread changes it
      uint64_t ok_calls = 0;
      // A sync that fell back (sim_test_util.h: fallbacks()) may have moved v to the page table,
      // ending its key and this thread's domain: the model is rebuilt and the check discarded.
      uint64_t model_good = fallbacks();
      auto resync = [&] {
        discarded.fetch_add(1);
        for (;;) {
          uint64_t f = fallbacks();
          mpk_end(v);
          domain = -1;
          bool ok = mpk_mprotect(v, process_prot) == 0;
          int k = domain_key(v, RW);
          ok = mpk_end(v) == 0 && ok;
          if (k && ok && fallbacks() == f) {
            key = k;
            model_good = f;
            return;
          }
        }
      };
      auto fail = [&](int op, const std::string &what) {
        if (fallbacks() != model_good) return resync();
        if (failures[t].size() < 10) failures[t].push_back({op, what});
      };
      auto expect_rights = [&](int op, const char *after) {
        mpk::Rights want = rights_of(domain >= 0 ? domain : process_prot);
        mpk::Rights got = own_rights(key);
        if (fallbacks() != model_good) return resync();
        if (got != want) {
          std::ostringstream m;
          m << "after " << after << ": key " << key << " gives " << name(got) << ", expected " << name(want)
            << (domain >= 0 ? " (domain)" : " (process-wide)");
          fail(op, m.str());
        }
      };
      ready.fetch_add(1);
      while (ready.load() < kThreads) spin_pause();
      static const int kProts[] = {PROT_NONE, PROT_READ, RW};
      for (int op = 0; op < kOps; ++op) {
        int prot = kProts[rng() % 3];
        before_call();
        errno = 0;
        switch (rng() % 6) {
          case 0:
          case 1:
            if (mpk_begin(v, prot) != 0) {
              fail(op, std::string("mpk_begin: ") + strerror(errno));
              break;
            }
            domain = prot;
            ++ok_calls;
            expect_rights(op, "mpk_begin");
            break;
          case 2: {
            int rc = mpk_end(v);
            if (domain >= 0) {
              if (rc != 0) fail(op, std::string("mpk_end of an open domain: ") + strerror(errno));
              else ++ok_calls;
            } else if (rc != -1 || errno != EINVAL) {
              fail(op, "mpk_end without a domain did not fail with EINVAL");
            }
            domain = -1;
            expect_rights(op, "mpk_end");
            break;
          }
          case 3:
          case 4:
            if (mpk_mprotect(v, prot) != 0) {
              fail(op, std::string("mpk_mprotect: ") + strerror(errno));
              break;
            }
            process_prot = prot;
            ++ok_calls;
            expect_rights(op, "mpk_mprotect");
            break;
          default:
            // PROT_EXEC cannot be thread-local; nothing changes.
            if (mpk_begin(v, PROT_READ | PROT_EXEC) != -1 || errno != EINVAL)
              fail(op, "mpk_begin(PROT_EXEC) did not fail with EINVAL");
            expect_rights(op, "a refused mpk_begin");
            break;
        }
        // Between calls the other threads' mprotects signal this one: its own key must not move.
        for (int i = 0; i < 3; ++i) {
          spin_pause();
          expect_rights(op, "other threads' calls");
        }
      }
      if (domain >= 0 && mpk_end(v) == 0) ++ok_calls;
      if (mpk_mprotect(v, PROT_NONE) == 0) ++ok_calls;
      calls.fetch_add(ok_calls);
    });
  }
  for (auto &t : threads) t.join();
  for (int t = 0; t < kThreads; ++t)
    for (const Failure &f : failures[t]) ADD_FAILURE() << "thread " << t << ", op " << f.op << ": " << f.what;
  // Every call that succeeded entered and left the engine: at least two PKRU writes each.
  EXPECT_GE(stat("wrpkru") - wrpkru0, 2 * calls.load());
  // Each thread's grants reached the others, so its revocations had to signal them.
  EXPECT_GT(stat("revocation_signals"), signals0);
  RecordProperty("discarded_checks", static_cast<int>(discarded.load()));
  if (kUnderTsan) {
    EXPECT_LE(discarded.load(), uint64_t{kThreads * kOps / 20}) << "operations whose check a fallback voided";
  } else {
    EXPECT_EQ(fallbacks(), fallbacks0) << "syncs that fell back to the page table";
  }
}

}  // namespace

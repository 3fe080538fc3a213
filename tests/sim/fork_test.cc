// fork_test.cc - fork from a process whose other threads hold domains and toggle a group's
// process-wide right at that moment. The child has one thread and a consistent engine: its calls
// work and change its own register, it signals nobody (the parent's threads are not its own),
// and the parent threads' domains do not pin keys in the child. The parent goes on unharmed.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "sim_test_util.h"

using namespace simt;

namespace {

class SimFork : public SimTest {};

// The child's checks; returns the number of the first that failed (its exit status), 0 if none.
// Only the C API, the register and the statistics: no gtest, no threads.
int child_checks(int v, int heap_vkey) {
  // The group may have changed keys in the parent (a fallback): look it up here, alone.
  if (mpk_mprotect(v, PROT_NONE) != 0) return 17;
  const int key = key_of(v);
  if (key <= 0) return 18;
  uint64_t signals0 = stat("revocation_signals"), fallbacks0 = stat("sync_fallbacks");
  if (mpk_mprotect(v, RW) != 0) return 1;
  if (own_rights(key) != mpk::Rights::kReadWrite) return 2;
  if (mpk_mprotect(v, PROT_NONE) != 0) return 3;
  if (own_rights(key) != mpk::Rights::kNone) return 4;
  if (mpk_begin(v, PROT_READ) != 0) return 5;
  if (own_rights(key) != mpk::Rights::kRead) return 6;
  if (mpk_end(v) != 0) return 7;
  if (own_rights(key) != mpk::Rights::kNone) return 8;
  // Nobody else to tell: the parent's threads are gone from the child's registry.
  if (stat("revocation_signals") != signals0 || stat("sync_fallbacks") != fallbacks0) return 9;
  // The parent's spinners held domains when the child was made: not pinned here.
  std::vector<int> vkeys;
  for (int i = 0; i < mpk::kHwKeys; ++i) {  // more groups than keys
    int fresh = fresh_vkey();
    if (mpk_mmap(fresh, nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) return 10;
    vkeys.push_back(fresh);
  }
  PinResult pins = pin_until_failure(vkeys);
  const int hw_keys = static_cast<int>(stat("hw_keys"));
  if (pins.pinned != hw_keys || pins.err != EBUSY) {
    char msg[160];
    int n = snprintf(msg, sizeof msg, "child: %d domains opened of %d keys, then errno %d (%s)\n", pins.pinned, hw_keys,
                     pins.err, strerror(pins.err));
    if (write(2, msg, n) < 0) return 11;
    return 11;
  }
  for (int i = 0; i < pins.pinned; ++i)
    if (mpk_end(vkeys[i]) != 0) return 12;
  char *p = static_cast<char *>(mpk_malloc(heap_vkey, 64));
  if (!p) return 13;
  if (mpk_begin(heap_vkey, RW) != 0) return 14;  // a new group is closed
  std::memcpy(p, "child", 6);
  if (mpk_end(heap_vkey) != 0) return 15;
  errno = 0;
  mpk_free(heap_vkey, p);
  if (errno != 0) return 16;
  return 0;
}

TEST_F(SimFork, ChildOfAThreadedProcess) {
  constexpr int kForks = 20;
  Group g(1, RW), d1(1, RW), d2(1, RW);
  ASSERT_TRUE(g.ok() && d1.ok() && d2.ok());
  const int k1 = key_of(d1.vkey()), k2 = key_of(d2.vkey());
  ASSERT_GT(k1, 0);
  ASSERT_GT(k2, 0);
  const int heap_vkey = fresh_vkey();  // mpk_malloc's group, made by the child only

  std::atomic<bool> stop{false};
  std::atomic<int> bad{0}, ready{0};
  std::vector<std::thread> threads;
  // Two threads in their domains, checking them all along.
  for (auto [v, k] : {std::pair{d1.vkey(), k1}, std::pair{d2.vkey(), k2}}) {
    threads.emplace_back([&, v, k] {
      if (mpk_begin(v, RW) != 0) bad.fetch_add(1);  // no one changes d1 or d2: no sync on their keys
      ready.fetch_add(1);
      while (!stop.load()) {
        if (own_rights(k) != mpk::Rights::kReadWrite) bad.fetch_add(1);
        spin_pause();
      }
      if (mpk_end(v) != 0) bad.fetch_add(1);
    });
  }
  // One toggling g's process-wide right, so forks land in the middle of syncs.
  std::atomic<uint64_t> toggles{0};
  threads.emplace_back([&] {
    ready.fetch_add(1);
    while (!stop.load()) {
      if (mpk_mprotect(g.vkey(), RW) != 0 || mpk_mprotect(g.vkey(), PROT_NONE) != 0) bad.fetch_add(1);
      toggles.fetch_add(1);
    }
  });
  while (ready.load() < 3) spin_pause();

  uint64_t fallbacks0 = fallbacks();
  for (int i = 0; i < kForks; ++i) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << strerror(errno);
    if (pid == 0) {
      alarm(30);
      _exit(child_checks(g.vkey(), heap_vkey));
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "fork " << i << ": child "
        << (WIFEXITED(status) ? "failed check " + std::to_string(WEXITSTATUS(status))
                              : "killed by signal " + std::to_string(WTERMSIG(status)));
  }
  stop.store(true);
  for (auto &t : threads) t.join();
  EXPECT_EQ(bad.load(), 0) << "failed calls or wrong rights in the parent's threads";
  EXPECT_GT(toggles.load(), 0u);
  RecordProperty("sync_fallbacks", static_cast<int>(fallbacks() - fallbacks0));
  // Under ThreadSanitizer the forking thread can take a sync signal just before fork's handlers
  // wait for the engine's lock, which the toggling thread holds while it waits for that ack.
  if (!kUnderTsan) {
    EXPECT_EQ(fallbacks(), fallbacks0);
  }
}

}  // namespace

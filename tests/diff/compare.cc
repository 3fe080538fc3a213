// compare.cc - scheduling the child runs, matching their digests and reporting mismatches.
#include "compare.h"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>

#include "child_process.h"
#include "trace_diff.h"

extern char **environ;

namespace mpkdiff {
namespace {

using Clock = std::chrono::steady_clock;

struct Task {
  int mode;  // 0 native, 1 preloaded (or the second native run)
  uint64_t first, count;
};

struct Running {
  Task task;
  ChildProcess child;
  Clock::time_point started;
};

std::string last_lines(const std::string &text, int n) {
  size_t from = text.size();
  for (int i = 0; i <= n && from > 0; ++i) {
    size_t nl = text.rfind('\n', from - 1);
    if (nl == std::string::npos) return text;
    if (i < n) from = nl;
    else return text.substr(nl + 1);
  }
  return text.substr(from);
}

struct Failure {
  int mode;
  uint64_t seed;        // the first seed the child did not finish
  uint64_t chunk_first; // where the child started
  std::string what;
};

class Comparer {
 public:
  explicit Comparer(const CompareOptions &o) : o_(o) {
    for (int m = 0; m < 2; ++m) {
      digest_[m].assign(o.count, 0);
      have_[m].assign(o.count, 0);
    }
    for (char **e = environ; *e; ++e)
      if (std::strncmp(*e, "LD_PRELOAD=", 11) != 0) base_env_.push_back(*e);
  }

  int run() {
    auto start = Clock::now();
    std::printf("mpk_diff compare: seeds %" PRIu64 "..%" PRIu64 " (%" PRIu64 "), up to %u ops each, %s programs; %s vs %s\n",
                o_.seed, o_.seed + o_.count - 1, o_.count, o_.max_ops, kind_choice_name(o_.kinds),
                mode_name(0).c_str(), mode_name(1).c_str());
    std::fflush(stdout);
    for (uint64_t a = 0; a < o_.count; a += o_.chunk) {
      uint64_t n = std::min(o_.chunk, o_.count - a);
      pending_.push_back({0, o_.seed + a, n});
      pending_.push_back({1, o_.seed + a, n});
    }
    schedule();
    double wall = std::chrono::duration<double>(Clock::now() - start).count();
    return report(wall);
  }

 private:
  std::string mode_name(int mode) const {
    if (o_.preload.empty()) return mode == 0 ? "native (1st run)" : "native (2nd run)";
    return mode == 0 ? "native" : "preloaded";
  }

  std::vector<std::string> env_for(int mode) const {
    std::vector<std::string> env = base_env_;
    if (mode == 1 && !o_.preload.empty()) {
      env.push_back("LD_PRELOAD=" + o_.preload);
      for (const auto &kv : o_.env) env.push_back(kv);
    }
    return env;
  }

  std::vector<std::string> run_argv(uint64_t first, uint64_t count, bool trace) const {
    std::vector<std::string> argv = {o_.self, "run", "--seed", std::to_string(first), "--count",
                                     std::to_string(count), "--max-ops", std::to_string(o_.max_ops)};
    if (o_.kinds != KindChoice::kMixed) {
      argv.push_back("--kind");
      argv.push_back(kind_choice_name(o_.kinds));
    }
    if (trace) argv.push_back("--trace");
    return argv;
  }

  // What a user types to see the seed under the preloaded library.
  std::string repro_run(uint64_t first, uint64_t count) const {
    std::string s = "env";
    if (!o_.preload.empty()) {
      s += " LD_PRELOAD=" + o_.preload;
      for (const auto &kv : o_.env) s += " " + kv;
    }
    s += " " + o_.self + " run --seed " + std::to_string(first) + " --count " + std::to_string(count);
    if (o_.max_ops != 200) s += " --max-ops " + std::to_string(o_.max_ops);
    if (o_.kinds != KindChoice::kMixed) s += std::string(" --kind ") + kind_choice_name(o_.kinds);
    return s + " --trace";
  }
  std::string repro_compare(uint64_t first, uint64_t count) const {
    std::string s = o_.self + " compare";
    if (!o_.preload.empty()) s += " --preload " + o_.preload;
    for (const auto &kv : o_.env) s += " --env " + kv;
    s += " --seed " + std::to_string(first) + " --count " + std::to_string(count);
    if (o_.max_ops != 200) s += " --max-ops " + std::to_string(o_.max_ops);
    if (o_.kinds != KindChoice::kMixed) s += std::string(" --kind ") + kind_choice_name(o_.kinds);
    return s;
  }

  void schedule() {
    std::vector<std::unique_ptr<Running>> running;
    while (!pending_.empty() || !running.empty()) {
      while (!pending_.empty() && static_cast<int>(running.size()) < o_.jobs) {
        auto r = std::make_unique<Running>();
        r->task = pending_.front();
        pending_.pop_front();
        r->started = Clock::now();
        if (!r->child.spawn(run_argv(r->task.first, r->task.count, false), env_for(r->task.mode))) {
          failures_.push_back({r->task.mode, r->task.first, r->task.first,
                               std::string("could not start: ") + std::strerror(errno)});
          continue;
        }
        running.push_back(std::move(r));
      }
      if (running.empty()) continue;
      std::vector<pollfd> fds;
      for (auto &r : running) fds.push_back({r->child.fd(), POLLIN, 0});
      poll(fds.data(), fds.size(), 1000);
      for (size_t i = running.size(); i-- > 0;) {
        Running &r = *running[i];
        bool ended = false, timed_out = false;
        if (fds[i].revents && !r.child.read_some()) ended = true;
        if (!ended && Clock::now() - r.started > std::chrono::seconds(o_.timeout_s)) {
          r.child.kill();
          ended = timed_out = true;
        }
        if (!ended) continue;
        int status = r.child.wait();
        seconds_[r.task.mode] += std::chrono::duration<double>(Clock::now() - r.started).count();
        finish(r.task, r.child.output(), status, timed_out);
        running.erase(running.begin() + static_cast<long>(i));
      }
    }
  }

  // Takes the "seed <s> <digest>" lines of a finished child; an abnormal end is pinned on the
  // first seed without a digest, and the rest of the chunk is queued again.
  void finish(const Task &t, const std::string &out, int status, bool timed_out) {
    size_t at = 0;
    while (at < out.size()) {
      size_t nl = out.find('\n', at);
      if (nl == std::string::npos) break;  // a partial last line is not a result
      unsigned long long seed = 0, digest = 0;
      if (std::sscanf(out.c_str() + at, "seed %llu %llx", &seed, &digest) == 2 && seed >= o_.seed &&
          seed - o_.seed < o_.count) {
        digest_[t.mode][seed - o_.seed] = digest;
        have_[t.mode][seed - o_.seed] = 1;
      }
      at = nl + 1;
    }
    bool clean = !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    uint64_t end = t.first + t.count;
    uint64_t missing = t.first;
    while (missing < end && have_[t.mode][missing - o_.seed]) ++missing;
    if (clean && missing == end) return;
    std::string what = timed_out ? "timed out after " + std::to_string(o_.timeout_s) + " s" : describe_status(status);
    if (missing == end) {  // every seed finished, but the process ended badly (at exit?)
      failures_.push_back({t.mode, end - 1, t.first, what + " after its last seed"});
      return;
    }
    failures_.push_back({t.mode, missing, t.first, what});
    if (missing + 1 < end && ++resumed_ <= kMaxResumes) pending_.push_back({t.mode, missing + 1, end - missing - 1});
  }

  // The outcome log of one seed run alone with --trace, without its closing digest line.
  std::string trace(int mode, uint64_t seed, bool *ok) const {
    ChildRun r = run_child(run_argv(seed, 1, true), env_for(mode), o_.timeout_s);
    *ok = r.started && !r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
    std::string digest_line = "seed " + std::to_string(seed) + " ";
    size_t at = r.output.rfind(digest_line);
    if (at != std::string::npos && (at == 0 || r.output[at - 1] == '\n')) r.output.erase(at);
    if (!*ok) r.output += "(" + (r.timed_out ? std::string("timed out") : describe_status(r.status)) + ")\n";
    return r.output;
  }

  void show_mismatch(uint64_t seed) {
    size_t i = seed - o_.seed;
    std::printf("\nMISMATCH seed %" PRIu64 ": outcome digests differ (%s %016" PRIx64 ", %s %016" PRIx64 ")\n",
                seed, mode_name(0).c_str(), digest_[0][i], mode_name(1).c_str(), digest_[1][i]);
    bool ok0 = false, ok1 = false;
    std::string a = trace(0, seed, &ok0), b = trace(1, seed, &ok1);
    uint64_t chunk_first = o_.seed + (i / o_.chunk) * o_.chunk;
    if (a == b) {
      std::printf("  run alone, the seed gives the same trace in both runs: the difference depends on the\n"
                  "  seeds run before it in the same process (its chunk started at seed %" PRIu64 ")\n",
                  chunk_first);
      std::printf("reproduce: %s\n", repro_compare(chunk_first, seed - chunk_first + 1).c_str());
      std::printf("reproduce: %s\n", repro_run(chunk_first, seed - chunk_first + 1).c_str());
      return;
    }
    std::fputs(side_by_side(a, b, mode_name(0), mode_name(1)).c_str(), stdout);
    std::printf("reproduce: %s\n", repro_run(seed, 1).c_str());
    std::printf("reproduce: %s\n", repro_compare(seed, 1).c_str());
  }

  void show_failure(const Failure &f) {
    std::printf("\nMISMATCH seed %" PRIu64 ": %s %s (its child started at seed %" PRIu64 ")\n", f.seed,
                f.what.c_str(), f.mode == 1 && !o_.preload.empty() ? "under the preloaded library" : ("in the " + mode_name(f.mode) + " run").c_str(),
                f.chunk_first);
    bool ok = false;
    std::string t = trace(f.mode, f.seed, &ok);
    if (ok) {
      std::printf("  run alone, the seed completes: the failure depends on the seeds run before it\n");
      std::printf("reproduce: %s\n", repro_compare(f.chunk_first, f.seed - f.chunk_first + 1).c_str());
      return;
    }
    // The trace is written line by line, so its tail shows the op that was running.
    std::printf("  last lines of its trace:\n%s", last_lines(t, 16).c_str());
    std::printf("reproduce: %s\n", repro_run(f.seed, 1).c_str());
    std::printf("reproduce: %s\n", repro_compare(f.seed, 1).c_str());
  }

  // Known divergences: "SEED reason" lines ('#' comments). Each is a bug that is understood and
  // not yet fixed; it is reported every run, and listing a seed that no longer diverges fails.
  std::map<uint64_t, std::string> load_known() {
    std::map<uint64_t, std::string> known;
    if (o_.known.empty()) return known;
    std::ifstream in(o_.known);
    if (!in) {
      std::printf("mpk_diff compare: cannot read --known %s\n", o_.known.c_str());
      known_unreadable_ = true;
      return known;
    }
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      size_t sp = line.find(' ');
      known[std::strtoull(line.c_str(), nullptr, 10)] = sp == std::string::npos ? "" : line.substr(sp + 1);
    }
    return known;
  }

  int report(double wall) {
    std::map<uint64_t, std::string> known = load_known();
    std::vector<uint64_t> mismatches;
    size_t known_seen = 0, known_fixed = 0;
    for (uint64_t i = 0; i < o_.count; ++i) {
      if (!have_[0][i] || !have_[1][i]) continue;
      uint64_t seed = o_.seed + i;
      bool differs = digest_[0][i] != digest_[1][i];
      auto it = known.find(seed);
      if (it != known.end() && differs) {
        ++known_seen;
        std::printf("known divergence, seed %" PRIu64 ": %s\n", seed, it->second.c_str());
      } else if (it != known.end()) {
        ++known_fixed;
        std::printf("seed %" PRIu64 " is listed in %s but no longer diverges: remove it\n", seed, o_.known.c_str());
      } else if (differs) {
        mismatches.push_back(seed);
      }
    }
    int shown = 0;
    for (uint64_t seed : mismatches)
      if (shown++ < o_.details) show_mismatch(seed);
    // The next ones in one line each (their first difference), then only their seeds.
    size_t k = static_cast<size_t>(o_.details);
    if (k < mismatches.size()) std::printf("\nmore mismatches (seed: op | %s | %s):\n", mode_name(0).c_str(), mode_name(1).c_str());
    for (; k < mismatches.size() && k < static_cast<size_t>(o_.details) + kSummaries; ++k) {
      bool ok0 = false, ok1 = false;
      std::string a = trace(0, mismatches[k], &ok0), b = trace(1, mismatches[k], &ok1);
      std::string diff = first_difference(a, b);
      std::printf("  %" PRIu64 ": %s\n", mismatches[k], diff.empty() ? "(not when run alone)" : diff.c_str());
    }
    if (k < mismatches.size()) {
      std::printf("and %zu more mismatching seeds:", mismatches.size() - k);
      for (; k < mismatches.size(); ++k) std::printf(" %" PRIu64, mismatches[k]);
      std::printf("\n");
    }
    shown = 0;
    for (const Failure &f : failures_)
      if (shown++ < o_.details) show_failure(f);
    if (failures_.size() > static_cast<size_t>(o_.details))
      std::printf("\n%zu more failed runs not shown\n", failures_.size() - o_.details);
    if (resumed_ > kMaxResumes) std::printf("\ntoo many failed runs: gave up re-running the rest of their chunks\n");
    uint64_t compared = 0;
    for (uint64_t i = 0; i < o_.count; ++i) compared += have_[0][i] && have_[1][i];
    std::printf("\nmpk_diff compare: %" PRIu64 " of %" PRIu64 " seeds compared, %zu mismatching, %zu known "
                "divergences, %zu failed runs; %.1f s wall (children: %s %.1f s, %s %.1f s)\n",
                compared, o_.count, mismatches.size(), known_seen, failures_.size(), wall, mode_name(0).c_str(),
                seconds_[0], mode_name(1).c_str(), seconds_[1]);
    bool good = mismatches.empty() && failures_.empty() && compared == o_.count && !known_fixed && !known_unreadable_;
    std::printf("%s\n", good ? "PASS" : "FAIL");
    return good ? 0 : 1;
  }

  static constexpr int kMaxResumes = 50;
  bool known_unreadable_ = false;
  static constexpr size_t kSummaries = 200;  // mismatches summarised in one line each
  const CompareOptions &o_;
  std::vector<std::string> base_env_;
  std::vector<uint64_t> digest_[2];
  std::vector<uint8_t> have_[2];
  std::deque<Task> pending_;
  std::vector<Failure> failures_;
  int resumed_ = 0;
  double seconds_[2] = {0, 0};
};

}  // namespace

int compare(const CompareOptions &options) { return Comparer(options).run(); }

}  // namespace mpkdiff

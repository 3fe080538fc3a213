// main.cc - the mpk_diff command line: `run` executes generated programs in this process,
// `compare` runs them natively and under a preloaded library and compares the outcomes.
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "area.h"
#include "compare.h"
#include "outcome_hash.h"
#include "program.h"
#include "program_runner.h"

namespace {

using namespace mpkdiff;

constexpr int kUsage = 2;

void usage(FILE *to) {
  std::fputs(
      "Usage: mpk_diff run [--seed S] [--count N] [--max-ops M] [--kind K] [--trace [--maps]]\n"
      "       mpk_diff compare [--preload /abs/lib.so] [--seed S] [--count N] [--max-ops M]\n"
      "                        [--kind K] [--jobs J] [--chunk C] [--timeout SEC] [--details D]\n"
      "                        [--env K=V]... [--known FILE]\n"
      "\n"
      "Differential tests of mmap/mprotect/munmap/mremap semantics. Each seed deterministically\n"
      "generates a program (1-4 threads, 1-4 regions, --max-ops ops at most, default 200) that\n"
      "maps, protects, unmaps and remaps memory, probes it with loads and stores, passes it to\n"
      "read()/write() and fork()s; ops run in a strict global order, so its outcome log is\n"
      "deterministic. --kind: `mixed` (default) draws each seed's kind, about one in four a\n"
      "sub-range program (ranges protected whole and in parts, and Ruby YJIT's one page\n"
      "read/write then the whole area read/exec); `classic` or `sub-range` makes every seed\n"
      "that kind.\n"
      "\n"
      "run      Runs seeds S..S+N-1 (default 1 and 1) in this process, one after another. Prints\n"
      "         `seed <s> <digest of the outcome log>` per program; with --trace, the log itself\n"
      "         (one line per op: what it did and its outcome), as it is produced; with --maps\n"
      "         too, after each line the VMAs inside the reservation (pages, permissions,\n"
      "         protection key, anonymous kB), to read why two runs differ.\n"
      "compare  Runs the same seeds in child processes natively and with LD_PRELOAD=lib (an\n"
      "         absolute path; extra --env K=V settings apply to that run only), in chunks of C\n"
      "         seeds (default 250) per child, J children at a time (default 2), and compares\n"
      "         the digests (default seeds 1..2000). Each mismatch is shown as the two traces side\n"
      "         by side with command lines that reproduce it; a child that crashes or exceeds\n"
      "         --timeout (default 900 s per child) is reported at the seed it was running.\n"
      "         The first D (default 5) mismatches and failed runs are shown in full, the rest\n"
      "         listed by seed.\n"
      "         Without --preload both runs are native: a determinism check.\n"
      "\n"
      "Exit status: 0 no mismatch, 1 a mismatch or a failed run, 2 bad usage, 3 a set-up failure\n"
      "(run).\n",
      to);
}

[[noreturn]] void bad_usage(const std::string &msg) {
  std::fprintf(stderr, "mpk_diff: %s\nTry 'mpk_diff --help'.\n", msg.c_str());
  std::exit(kUsage);
}

uint64_t number(const char *opt, const char *text, uint64_t lo, uint64_t hi) {
  char *end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (!*text || *end || errno || text[0] == '-' || v < lo || v > hi)
    bad_usage(std::string(opt) + " wants a whole number in " + std::to_string(lo) + ".." + std::to_string(hi) +
              ", not '" + text + "'");
  return v;
}

void write_all(const std::string &s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = write(STDOUT_FILENO, s.data() + done, s.size() - done);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      std::exit(3);
    }
    done += static_cast<size_t>(n);
  }
}

int run_command(uint64_t seed, uint64_t count, uint32_t max_ops, KindChoice kinds, bool trace, bool maps) {
  GeneratorLimits limits;
  limits.max_ops = max_ops;
  limits.kinds = kinds;
  ProgramRunner runner;
  // Unbuffered writes: when the process dies, everything it finished is already out.
  ProgramRunner::LineSink sink;
  if (trace) sink = [maps](const std::string &line) {
    write_all(line);
    if (maps) write_all(Area::maps());
  };
  for (uint64_t s = seed; s < seed + count; ++s) {
    std::string log = runner.run(generate_program(s, limits), sink);
    char line[64];
    std::snprintf(line, sizeof line, "seed %" PRIu64 " %016" PRIx64 "\n", s, fnv1a(log));
    write_all(line);
  }
  return 0;
}

std::string self_path() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) bad_usage("cannot read /proc/self/exe");
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return kUsage;
  }
  std::string command = argv[1];
  if (command == "-h" || command == "--help" || command == "help") {
    usage(stdout);
    return 0;
  }
  if (command != "run" && command != "compare") bad_usage("unknown command '" + command + "'");
  bool is_run = command == "run";

  CompareOptions o;
  o.count = is_run ? 1 : 2000;
  bool trace = false, maps = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc) bad_usage("option " + a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else if (a == "--seed") {
      o.seed = number("--seed", value(), 0, UINT64_MAX / 2);
    } else if (a == "--count") {
      o.count = number("--count", value(), 1, 100000000);
    } else if (a == "--max-ops") {
      o.max_ops = static_cast<uint32_t>(number("--max-ops", value(), 1, 100000));
    } else if (a == "--kind") {
      std::string k = value();
      if (k == "mixed") o.kinds = KindChoice::kMixed;
      else if (k == "classic") o.kinds = KindChoice::kClassic;
      else if (k == "sub-range") o.kinds = KindChoice::kSubRange;
      else bad_usage("--kind wants mixed, classic or sub-range, not '" + k + "'");
    } else if (a == "--trace" && is_run) {
      trace = true;
    } else if (a == "--maps" && is_run) {
      maps = true;
    } else if (a == "--preload" && !is_run) {
      o.preload = value();
      if (o.preload.empty() || o.preload[0] != '/') bad_usage("--preload wants an absolute path");
      if (access(o.preload.c_str(), R_OK) != 0) bad_usage("--preload: cannot read " + o.preload);
    } else if (a == "--jobs" && !is_run) {
      o.jobs = static_cast<int>(number("--jobs", value(), 1, 256));
    } else if (a == "--chunk" && !is_run) {
      o.chunk = number("--chunk", value(), 1, 100000000);
    } else if (a == "--known" && !is_run) {
      o.known = value();
    } else if (a == "--details" && !is_run) {
      o.details = static_cast<int>(number("--details", value(), 0, 100000));
    } else if (a == "--timeout" && !is_run) {
      o.timeout_s = static_cast<int>(number("--timeout", value(), 1, 86400 * 7));
    } else if (a == "--env" && !is_run) {
      std::string kv = value();
      size_t eq = kv.find('=');
      if (eq == 0 || eq == std::string::npos) bad_usage("--env wants K=V, not '" + kv + "'");
      if (kv.compare(0, eq, "LD_PRELOAD") == 0) bad_usage("use --preload, not --env LD_PRELOAD=");
      o.env.push_back(kv);
    } else {
      bad_usage("unknown option '" + a + "' for " + command);
    }
  }
  if (!o.env.empty() && o.preload.empty()) bad_usage("--env applies to the preloaded run: give --preload too");
  if (is_run) {
    if (maps && !trace) bad_usage("--maps goes with --trace");
    return run_command(o.seed, o.count, o.max_ops, o.kinds, trace, maps);
  }
  o.self = self_path();
  return compare(o);
}

// Every class of error: the exact FILE:LINE:COLUMN and a message that says what was expected and
// what was found.
#include <gtest/gtest.h>
#include <signal.h>

#include <string>

#include "policy_text.h"

namespace mpk::cfg {
namespace {

using test::load_text;

// Loads text that must fail; returns the message ("p.toml:L:C: ...").
std::string error_of(const std::string &text) {
  auto l = load_text(text);
  EXPECT_FALSE(l.ok) << text;
  return l.error;
}

::testing::AssertionResult starts_with(const std::string &s, const std::string &prefix) {
  if (s.compare(0, prefix.size(), prefix) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << s << "\" does not start with \"" << prefix << "\"";
}

const char kRegionHead[] = "[[region]]\nname = \"r\"\n";  // lines 1-2

TEST(Errors, TomlSyntaxUsesTheParserPosition) {
  std::string e = error_of("mode = \"enforce\"\nkey_budget = = 3\n");
  EXPECT_TRUE(starts_with(e, "p.toml:2:")) << e;
  EXPECT_NE(e.find("invalid TOML: "), std::string::npos) << e;
}

TEST(Errors, TomlDuplicateKey) {
  std::string e = error_of("mode = \"audit\"\nmode = \"off\"\n");
  EXPECT_TRUE(starts_with(e, "p.toml:2:")) << e;
  EXPECT_NE(e.find("invalid TOML"), std::string::npos);
}

TEST(Errors, UnknownRootKeySuggestsTheNearOne) {
  EXPECT_EQ(error_of("mode = \"audit\"\n\nkey_budgett = 3\n"),
            "p.toml:3:1: unknown key 'key_budgett' (did you mean 'key_budget'? expected one of: mode, "
            "on_error, key_budget, evict_rate, promote_after, sync_signal, log, region)");
}

TEST(Errors, UnknownTable) {
  EXPECT_EQ(error_of("[settings]\nmode = \"audit\"\n"),
            "p.toml:1:2: unknown table [settings] (the only tables are [[region]] and [[region.thread]])");
}

TEST(Errors, UnknownRegionKeyNamesTheRegion) {
  std::string e = error_of("[[region]]\nname = \"x\"\naction = \"emulate\"\n  foo = 1\n");
  EXPECT_TRUE(starts_with(e, "p.toml:4:3: unknown key 'foo' in [[region]] 'x' (expected one of: name, path,"))
      << e;
}

TEST(Errors, UnknownThreadKey) {
  std::string e = error_of(std::string(kRegionHead) +
                           "prot = \"rw\"\naction = \"isolate\"\n[[region.thread]]\nname = \"a\"\nrigth = \"r\"\n");
  EXPECT_TRUE(starts_with(e, "p.toml:7:1: unknown key 'rigth' in [[region.thread]] #1 of [[region]] 'r' "
                             "(did you mean 'right'?"))
      << e;
}

TEST(Errors, WrongTypeSaysWhatWasFound) {
  EXPECT_EQ(error_of("key_budget = \"13\"\n"),
            "p.toml:1:14: 'key_budget' must be an integer from 1 to 14, found \"13\"");
  EXPECT_EQ(error_of("evict_rate = 1.5\n"),
            "p.toml:1:14: 'evict_rate' must be an integer from 0 to 100, found a floating-point number");
  EXPECT_EQ(error_of("mode = true\n"),
            "p.toml:1:8: 'mode' must be one of \"enforce\", \"audit\" or \"off\", found true");
  EXPECT_EQ(error_of("log = [\"a\"]\n"), "p.toml:1:7: 'log' must be \"stderr\" or a file path, found an array");
}

TEST(Errors, OutOfRange) {
  EXPECT_EQ(error_of("key_budget = 15\n"), "p.toml:1:14: 'key_budget' must be an integer from 1 to 14, found 15");
  EXPECT_EQ(error_of("key_budget = 0\n"), "p.toml:1:14: 'key_budget' must be an integer from 1 to 14, found 0");
  EXPECT_EQ(error_of("evict_rate = 101\n"),
            "p.toml:1:14: 'evict_rate' must be an integer from 0 to 100, found 101");
  EXPECT_EQ(error_of("\n\npromote_after = 0\n"),
            "p.toml:3:17: 'promote_after' must be an integer from 1 to 1000, found 0");
}

TEST(Errors, BadChoice) {
  EXPECT_EQ(error_of("mode = \"enforced\"\n"),
            "p.toml:1:8: 'mode' must be one of \"enforce\", \"audit\" or \"off\", found \"enforced\"");
  EXPECT_EQ(error_of("on_error = \"ignore\"\n"),
            "p.toml:1:12: 'on_error' must be one of \"fail\" or \"passthrough\", found \"ignore\"");
  std::string e = error_of(std::string(kRegionHead) + "prot = \"r\"\naction = \"protect\"\n");
  EXPECT_EQ(e, "p.toml:4:10: 'action' in [[region]] 'r' must be one of \"emulate\", \"isolate\" or "
               "\"passthrough\", found \"protect\"");
  e = error_of(std::string(kRegionHead) + "prot = \"r\"\naction = \"emulate\"\nexec = \"rwx\"\n");
  EXPECT_EQ(e, "p.toml:5:8: 'exec' in [[region]] 'r' must be one of \"ceiling\" or \"exact\", found \"rwx\"");
  e = error_of(std::string(kRegionHead) + "prot = \"r\"\naction = \"emulate\"\ngrants = \"now\"\n");
  EXPECT_TRUE(starts_with(e, "p.toml:5:10: 'grants' in [[region]] 'r' must be one of \"lazy\" or \"eager\"")) << e;
  e = error_of(std::string(kRegionHead) + "prot = \"rx\"\naction = \"isolate\"\nmprotect = \"process\"\n");
  EXPECT_EQ(e, "p.toml:5:12: 'mprotect' in [[region]] 'r' must be one of \"kernel\" or \"thread\", found \"process\"");
}

TEST(Errors, SyncSignal) {
  std::string range = std::to_string(SIGRTMIN) + " to " + std::to_string(SIGRTMAX);
  EXPECT_EQ(error_of("sync_signal = \"SIGUSR1\"\n"),
            "p.toml:1:15: 'sync_signal' must be a real-time signal: \"SIGRTMIN+n\", \"SIGRTMAX-n\" or a number "
            "from " + range + ", found \"SIGUSR1\"");
  EXPECT_EQ(error_of("sync_signal = 10\n"),
            "p.toml:1:15: 'sync_signal' must be a real-time signal: \"SIGRTMIN+n\", \"SIGRTMAX-n\" or a number "
            "from " + range + ", found 10");
  std::string e = error_of("sync_signal = \"SIGRTMAX-40\"\n");
  EXPECT_EQ(e, "p.toml:1:15: 'sync_signal' \"SIGRTMAX-40\" is signal " + std::to_string(SIGRTMAX - 40) +
                   ", outside the real-time range " + std::to_string(SIGRTMIN) + ".." + std::to_string(SIGRTMAX));
}

TEST(Errors, RegionMustBeAnArrayOfTables) {
  EXPECT_EQ(error_of("[region]\nname = \"a\"\n"),
            "p.toml:1:2: 'region' must be an array of tables (written [[region]]), found a table");
  EXPECT_EQ(error_of("region = 3\n"),
            "p.toml:1:1: 'region' must be an array of tables (written [[region]]), found 3");
}

TEST(Errors, MissingNameAndAction) {
  EXPECT_EQ(error_of("mode = \"audit\"\n\n[[region]]\nprot = \"r\"\naction = \"emulate\"\n"),
            "p.toml:3:1: [[region]] #1 has no 'name': every region needs a unique name of up to 63 characters");
  EXPECT_EQ(error_of("[[region]]\nname = \"a\"\nprot = \"r\"\n"),
            "p.toml:1:1: [[region]] 'a' has no 'action': expected action = \"emulate\", \"isolate\" or "
            "\"passthrough\"");
}

TEST(Errors, NameProblems) {
  EXPECT_EQ(error_of("[[region]]\nname = \"\"\n"),
            "p.toml:2:8: 'name' in [[region]] #1 must be non-empty: a string of up to 63 characters, found \"\"");
  std::string long_name(64, 'n');
  EXPECT_EQ(error_of("[[region]]\nname = \"" + long_name + "\"\n"),
            "p.toml:2:8: 'name' in [[region]] #1 is 64 characters long; the limit is 63");
  EXPECT_EQ(error_of("[[region]]\nname = \"a\\tb\"\n"), "p.toml:2:8: 'name' in [[region]] #1 contains a control character");
}

TEST(Errors, DuplicateRegionName) {
  std::string text =
      "[[region]]\nname = \"jit\"\nprot = \"rw\"\naction = \"emulate\"\n\n"
      "[[region]]\nname = \"jit\"\nprot = \"rx\"\naction = \"emulate\"\n";
  EXPECT_EQ(error_of(text), "p.toml:7:8: duplicate region name 'jit' (first used by the [[region]] on line 1)");
}

TEST(Errors, EmptyMatch) {
  EXPECT_EQ(error_of("\n[[region]]\nname = \"a\"\naction = \"emulate\"\n"),
            "p.toml:2:1: [[region]] 'a' has no match criteria: give at least one of path, min_size, max_size, "
            "prot, address, caller, anonymous, shared");
}

TEST(Errors, KeysThatDoNotFitTheAction) {
  std::string base = std::string(kRegionHead) + "prot = \"rw\"\n";
  EXPECT_EQ(error_of(base + "action = \"emulate\"\n[[region.thread]]\nname = \"a\"\nright = \"r\"\n"),
            "p.toml:5:10: 'thread' in [[region]] 'r' applies to isolate regions only (this region has action = "
            "\"emulate\")");
  EXPECT_EQ(error_of(base + "action = \"emulate\"\ndefault = \"r\"\n"),
            "p.toml:5:1: 'default' in [[region]] 'r' applies to isolate regions only (this region has action = "
            "\"emulate\")");
  EXPECT_EQ(error_of(base + "enforce = \"audit\"\naction = \"passthrough\"\n"),
            "p.toml:4:1: 'enforce' in [[region]] 'r' applies to isolate regions only (this region has action = "
            "\"passthrough\")");
  EXPECT_EQ(error_of(base + "action = \"isolate\"\npromote_after = 3\n"),
            "p.toml:5:1: 'promote_after' in [[region]] 'r' applies to emulate regions only (this region has "
            "action = \"isolate\")");
  EXPECT_EQ(error_of(base + "action = \"emulate\"\nmprotect = \"thread\"\n"),
            "p.toml:5:1: 'mprotect' in [[region]] 'r' applies to isolate regions only (this region has action = "
            "\"emulate\")");
  EXPECT_EQ(error_of(base + "action = \"passthrough\"\nexec = \"exact\"\n"),
            "p.toml:5:1: 'exec' in [[region]] 'r' applies to emulate and isolate regions only (this region has "
            "action = \"passthrough\")");
}

TEST(Errors, Sizes) {
  std::string base = std::string(kRegionHead) + "action = \"emulate\"\n";
  const std::string what = "a size: bytes as an integer, or a string with a K, M, G or T suffix like \"64K\"";
  EXPECT_EQ(error_of(base + "min_size = \"64KB\"\n"),
            "p.toml:4:12: 'min_size' in [[region]] 'r' must be " + what + ", found \"64KB\"");
  EXPECT_EQ(error_of(base + "min_size = -1\n"),
            "p.toml:4:12: 'min_size' in [[region]] 'r' must be " + what + ", found -1");
  EXPECT_EQ(error_of(base + "max_size = \"99999999999999T\"\n"),
            "p.toml:4:12: 'max_size' in [[region]] 'r' must be " + what + ", found \"99999999999999T\"");
  EXPECT_EQ(error_of(base + "max_size = 0\n"), "p.toml:4:12: 'max_size' in [[region]] 'r' is 0, which no mapping can match");
  EXPECT_EQ(error_of(base + "max_size = \"1M\"\nmin_size = \"2M\"\n"),
            "p.toml:4:12: 'max_size' in [[region]] 'r' (1048576 bytes) is smaller than min_size (2097152 bytes)");
}

TEST(Errors, Prot) {
  std::string base = std::string(kRegionHead) + "action = \"emulate\"\n";
  const std::string what = "\"none\" or a combination of the letters r, w, x like \"rw\"";
  EXPECT_EQ(error_of(base + "prot = \"rwz\"\n"), "p.toml:4:8: 'prot' in [[region]] 'r' must be " + what + ", found \"rwz\"");
  EXPECT_EQ(error_of(base + "prot = \"rr\"\n"), "p.toml:4:8: 'prot' in [[region]] 'r' must be " + what + ", found \"rr\"");
  EXPECT_EQ(error_of(base + "prot = \"\"\n"), "p.toml:4:8: 'prot' in [[region]] 'r' must be " + what + ", found \"\"");
  EXPECT_EQ(error_of(base + "prot = 3\n"), "p.toml:4:8: 'prot' in [[region]] 'r' must be " + what + ", found 3");
}

TEST(Errors, Address) {
  std::string base = std::string(kRegionHead) + "action = \"emulate\"\n";
  EXPECT_TRUE(starts_with(error_of(base + "address = [\"0x1000\"]\n"),
                          "p.toml:4:11: 'address' in [[region]] 'r' must be an array of two addresses [lo, hi)"));
  EXPECT_EQ(error_of(base + "address = [\"0x1000\", \"0xZZ\"]\n"),
            "p.toml:4:22: 'address' in [[region]] 'r': each bound must be a hex string like \"0x7f0000000000\" or "
            "a non-negative integer, found \"0xZZ\"");
  EXPECT_EQ(error_of(base + "address = [\"0x2000\", \"0x1000\"]\n"),
            "p.toml:4:11: 'address' in [[region]] 'r' is [lo, hi) with lo below hi, found lo 0x2000 and hi 0x1000");
}

TEST(Errors, Caller) {
  std::string base = std::string(kRegionHead) + "action = \"emulate\"\n";
  EXPECT_EQ(error_of(base + "caller = \"libx.so+0xZZ\"\n"),
            "p.toml:4:10: 'caller' in [[region]] 'r' \"libx.so+0xZZ\" is not a valid pattern: after '+' expected a "
            "hex offset like 0x1a2b0, or '*' for anywhere in the module");
  EXPECT_EQ(error_of(base + "caller = \"+0x10\"\n"),
            "p.toml:4:10: 'caller' in [[region]] 'r' \"+0x10\" is not a valid pattern: no module name before '+'");
  EXPECT_EQ(error_of(base + "caller = \"/usr/lib/libx.so+*\"\n"),
            "p.toml:4:10: 'caller' in [[region]] 'r' \"/usr/lib/libx.so+*\" is not a valid pattern: the module is "
            "matched by its file's basename: leave out the directory");
  EXPECT_EQ(error_of(base + "caller = \"a+b+*\"\n"),
            "p.toml:4:10: 'caller' in [[region]] 'r' \"a+b+*\" is not a valid pattern: more than one '+'");
}

TEST(Errors, PathMustBeAbsolute) {
  std::string base = std::string(kRegionHead) + "action = \"emulate\"\n";
  EXPECT_EQ(error_of(base + "path = \"cache/*.dat\"\n"),
            "p.toml:4:8: 'path' in [[region]] 'r' must be an absolute path glob (it is matched against the mapped "
            "file's full path, like \"/var/cache/*.dat\"), found \"cache/*.dat\"");
  std::string long_path = "/" + std::string(kPathMax, 'p');
  EXPECT_EQ(error_of(base + "path = \"" + long_path + "\"\n"),
            "p.toml:4:8: 'path' in [[region]] 'r' is 256 characters long; the limit is 255");
}

TEST(Errors, ThreadRules) {
  std::string base = std::string(kRegionHead) + "prot = \"rw\"\naction = \"isolate\"\n";
  EXPECT_EQ(error_of(base + "[[region.thread]]\nright = \"rw\"\n"),
            "p.toml:5:1: [[region.thread]] #1 of [[region]] 'r' has neither 'name' nor 'start': give a thread-name "
            "glob, a start-routine glob, or both");
  EXPECT_EQ(error_of(base + "[[region.thread]]\nname = \"a\"\n[[region.thread]]\nname = \"b\"\n"),
            "p.toml:5:1: [[region.thread]] #1 of [[region]] 'r' has no 'right': expected right = \"none\", \"r\" or "
            "\"rw\"");
  EXPECT_EQ(error_of(base + "[[region.thread]]\nname = \"a\"\nright = \"w\"\n"),
            "p.toml:7:9: 'right' in [[region.thread]] #1 of [[region]] 'r' must be one of \"none\", \"r\" or \"rw\", "
            "found \"w\"");
  EXPECT_EQ(error_of(base + "[[region.thread]]\nname = \"memcached-worker*\"\nright = \"r\"\n"),
            "p.toml:6:8: 'name' in [[region.thread]] #1 of [[region]] 'r' can only match names of 16 or more "
            "characters, but thread names (comm) hold at most 15: it would never match");
  EXPECT_EQ(error_of(base + "thread = [1, 2]\n"),
            "p.toml:5:1: 'thread' in [[region]] 'r' must be an array of tables (written [[region.thread]]), found "
            "an array");
  // The second rule's errors name it; the region context comes back after the rules.
  EXPECT_EQ(error_of(base + "[[region.thread]]\nname = \"a\"\nright = \"r\"\n[[region.thread]]\nstart = 5\n"),
            "p.toml:9:9: 'start' in [[region.thread]] #2 of [[region]] 'r' must be a start-routine symbol glob like "
            "\"worker_main*\", found 5");
}

TEST(Errors, TooMany) {
  std::string text;
  for (int i = 0; i <= kMaxRegions; ++i)
    text += "[[region]]\nname = \"r" + std::to_string(i) + "\"\nprot = \"r\"\naction = \"emulate\"\n";
  EXPECT_EQ(error_of(text), "p.toml:" + std::to_string(4 * kMaxRegions + 1) + ":1: too many regions: at most 64 are allowed");

  std::string iso = std::string(kRegionHead) + "prot = \"rw\"\naction = \"isolate\"\n";
  for (int i = 0; i <= kMaxThreadRules; ++i) iso += "[[region.thread]]\nname = \"t\"\nright = \"r\"\n";
  EXPECT_EQ(error_of(iso), "p.toml:" + std::to_string(5 + 3 * kMaxThreadRules) +
                               ":1: too many thread rules in [[region]] 'r': at most 16 are allowed");
}

TEST(Errors, TheFirstErrorInFileOrderIsReported) {
  // toml++ keeps keys sorted by name; the loader reads them in file order.
  EXPECT_EQ(error_of("mode = \"x\"\nevict_rate = 500\n"),
            "p.toml:1:8: 'mode' must be one of \"enforce\", \"audit\" or \"off\", found \"x\"");
}

TEST(Errors, MessagesAreOneLineOfPrintableText) {
  // Values, key names and what toml++ saw are quoted with their control characters escaped.
  EXPECT_EQ(error_of("mode = \"a\\nb\\u001b[2J\\u0000c\"\n"),
            "p.toml:1:8: 'mode' must be one of \"enforce\", \"audit\" or \"off\", found \"a\\nb\\x1b[2J\\x00c\"");
  EXPECT_EQ(error_of("\"a\\tb\\r\" = 1\n"),
            "p.toml:1:1: unknown key 'a\\tb\\r' (expected one of: mode, on_error, key_budget, evict_rate, "
            "promote_after, sync_signal, log, region)");
  // Raw bytes in the file, where toml++ stops and says what it saw.
  for (const std::string &text : {std::string("mode = tr\x1a\n"), std::string("mode = \"a\0b\"\n", 13),
                                   std::string("mode = \"audit\"\x7f\n")}) {
    std::string e = error_of(text);
    EXPECT_TRUE(starts_with(e, "p.toml:1:")) << e;
    for (unsigned char c : e) EXPECT_TRUE(c >= 0x20 && c != 0x7f) << e;
  }
  EXPECT_NE(error_of("mode = tr\x1a\n").find("\\x1a"), std::string::npos);
}

TEST(Errors, NonAsciiOutsideStringsIsAParseError) {
  // One code point from each range where toml++ 3.3.0's whitespace test had no answer (see
  // config/toml_parser.h), where the parser asks it: between tokens, and after a line-ending
  // backslash in a multi-line string.
  for (const char *cp : {"\u00e4", "\u0499", "\u2c5e", "\u3001", "\u3057", "\ufb26", "\ufefe"}) {
    std::string e = error_of(std::string(cp) + " = 1\n");
    EXPECT_TRUE(starts_with(e, "p.toml:1:1: invalid TOML: ")) << e;
    e = error_of("mode = \"audit\" " + std::string(cp) + "\n");
    EXPECT_TRUE(starts_with(e, "p.toml:1:")) << e;
    EXPECT_NE(e.find("invalid TOML"), std::string::npos) << e;
    // Valid TOML: the string is the code point alone, and 's' is no policy key.
    e = error_of("s = \"\"\"\\\n" + std::string(cp) + "\"\"\"\n");
    EXPECT_TRUE(starts_with(e, "p.toml:1:1: unknown key 's'")) << e;
  }
  // In comments and strings, non-ASCII text is fine.
  auto l = load_text("# Grüße, §, 字\nlog = \"/tmp/grüße-§.log\"\n");
  EXPECT_TRUE(l.ok) << l.error;
  EXPECT_STREQ(l.policy->settings.log_path, "/tmp/grüße-§.log");
}

TEST(Errors, FileProblems) {
  Policy *p = new Policy;
  char err[512];
  EXPECT_FALSE(load_policy("/nonexistent/mpk.toml", p, err, sizeof err));
  EXPECT_STREQ(err, "/nonexistent/mpk.toml: cannot read: No such file or directory");
  EXPECT_FALSE(load_policy("/tmp", p, err, sizeof err));
  EXPECT_STREQ(err, "/tmp: cannot read: Is a directory");
  EXPECT_FALSE(load_policy("", p, err, sizeof err));
  // A tiny buffer truncates, never overflows.
  char tiny[8];
  EXPECT_FALSE(load_policy("/nonexistent/mpk.toml", p, tiny, sizeof tiny));
  EXPECT_STREQ(tiny, "/nonexi");
  delete p;
}

TEST(Errors, OnErrorSurvivesABadFile) {
  // Valid TOML, invalid policy: the file's on_error is kept, everything else is the defaults.
  auto l = load_text("on_error = \"passthrough\"\nkey_budget = 99\n");
  EXPECT_FALSE(l.ok);
  EXPECT_EQ(l.policy->settings.on_error, OnError::kPassthrough);
  EXPECT_EQ(l.policy->settings.key_budget, 13);
  EXPECT_EQ(l.policy->region_count, 0);
  // Not valid TOML: a plain top-level on_error line still counts.
  auto m = load_text("  on_error = 'passthrough'   # keep running\nmode = = \n");
  EXPECT_FALSE(m.ok);
  EXPECT_EQ(m.policy->settings.on_error, OnError::kPassthrough);
  // ...but not inside a table, and not when the value is something else.
  auto n = load_text("[[region]]\non_error = \"passthrough\"\nmode = = \n");
  EXPECT_EQ(n.policy->settings.on_error, OnError::kFail);
  auto o = load_text("on_error = \"passthroughx\"\nmode = = \n");
  EXPECT_EQ(o.policy->settings.on_error, OnError::kFail);
  auto q = load_text("key_budget = 99\n");
  EXPECT_EQ(q.policy->settings.on_error, OnError::kFail);
}

TEST(Errors, HeapRegions) {
  const std::string base = std::string(kRegionHead) + "action = \"isolate\"\n";  // lines 1-3
  EXPECT_EQ(error_of(base + "heap = true\npath = \"/tmp/*\"\n"),
            "p.toml:5:8: 'path' in [[region]] 'r' does not apply to a heap region (heap = true matches allocations "
            "by min_size, max_size, module and caller, not mappings)");
  EXPECT_EQ(error_of(base + "anonymous = true\nheap = true\n"),
            "p.toml:4:13: 'anonymous' in [[region]] 'r' does not apply to a heap region (heap = true matches "
            "allocations by min_size, max_size, module and caller, not mappings)");
  EXPECT_EQ(error_of(base + "heap = true\nmin_size = 1\nmprotect = \"thread\"\n"),
            "p.toml:6:12: 'mprotect' in [[region]] 'r' must be \"kernel\" in a heap region (a JIT's code area is a "
            "mapping, not allocations)");
  EXPECT_EQ(error_of(base + "heap = true\n"),
            "p.toml:1:1: [[region]] 'r' has no match criteria: give at least one of min_size, max_size, module, "
            "caller, or a [[region.gate]]");
  EXPECT_EQ(error_of(base + "min_size = 1\nmodule = \"libfoo.so\"\n"),
            "p.toml:5:10: 'module' in [[region]] 'r' applies to heap regions only (heap = true): a mapping is "
            "matched by its call stack with 'caller'");
  EXPECT_EQ(error_of(base + "heap = true\nmodule = \"/usr/lib/libfoo.so\"\n"),
            "p.toml:5:10: 'module' in [[region]] 'r' is matched against the module's file name: leave out the "
            "directory, found \"/usr/lib/libfoo.so\"");
  EXPECT_EQ(error_of(base + "heap = true\nmodule = \"\"\n"),
            "p.toml:5:10: 'module' in [[region]] 'r' must be non-empty: a glob on a module's file name, like "
            "\"libcrypto.so*\", found \"\"");
  EXPECT_EQ(error_of(std::string(kRegionHead) + "action = \"emulate\"\nheap = true\nmin_size = 1\n"),
            "p.toml:4:1: 'heap' in [[region]] 'r' applies to isolate regions only (this region has action = "
            "\"emulate\")");
  std::string many;
  for (int i = 0; i <= kMaxHeapRegions; ++i)
    many += "[[region]]\nname = \"h" + std::to_string(i) + "\"\naction = \"isolate\"\nheap = true\nmin_size = 1\n";
  EXPECT_EQ(error_of(many), "p.toml:84:8: too many heap regions in [[region]] 'h16': at most 16 are allowed");
}

TEST(Errors, Gates) {
  const std::string base = std::string(kRegionHead) + "action = \"isolate\"\nmin_size = 1\n";  // lines 1-4
  EXPECT_EQ(error_of(base + "[[region.gate]]\nsymbols = [\"RSA_*\"]\n"),
            "p.toml:5:1: [[region.gate]] #1 of [[region]] 'r' has no 'module': name the module that defines the "
            "functions, like module = \"libcrypto.so*\"");
  EXPECT_EQ(error_of(base + "[[region.gate]]\nmodule = \"libcrypto.so*\"\n"),
            "p.toml:5:1: [[region.gate]] #1 of [[region]] 'r' has no 'symbols': name the functions that open the "
            "region, like symbols = [\"RSA_*\"]");
  EXPECT_EQ(error_of(base + "[[region.gate]]\nmodule = \"libcrypto.so*\"\nsymbols = []\n"),
            "p.toml:7:11: 'symbols' in [[region.gate]] #1 of [[region]] 'r' must be a non-empty array of "
            "function-name globs, like [\"RSA_*\", \"PEM_read_*\"], found an array");
  EXPECT_EQ(error_of(base + "[[region.gate]]\nmodule = \"/lib/libcrypto.so.3\"\nsymbols = [\"RSA_*\"]\n"),
            "p.toml:6:10: 'module' in [[region.gate]] #1 of [[region]] 'r' is matched against the module's file "
            "name: leave out the directory, found \"/lib/libcrypto.so.3\"");
  EXPECT_EQ(error_of(base + "[[region.gate]]\nmodule = \"x\"\nsymbols = [\"a\"]\nwhen = 1\n"),
            "p.toml:8:1: unknown key 'when' in [[region.gate]] #1 of [[region]] 'r' (expected one of: module, symbols, allocate)");
  EXPECT_EQ(error_of(std::string(kRegionHead) + "action = \"emulate\"\nmin_size = 1\n[[region.gate]]\nmodule = \"x\"\n"
                     "symbols = [\"a\"]\n"),
            "p.toml:5:10: 'gate' in [[region]] 'r' applies to isolate regions only (this region has action = "
            "\"emulate\")");
}

}  // namespace
}  // namespace mpk::cfg

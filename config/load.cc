// load.cc - load_policy(): a TOML file to a Policy, every error as FILE:LINE:COLUMN: message;
// load_policy_text() does the same for text already in memory.
//
// Runs once at start-up, so it may allocate (toml++ does). toml++ is used header-only and
// without exceptions (TOML_EXCEPTIONS=0, set by the build): parse() returns a parse_result.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "toml_parser.h"

#include "policy.h"
#include "values.h"

namespace mpk::cfg {
namespace {

constexpr size_t kMaxFileBytes = 1 << 20;

using Entry = std::pair<const toml::key *, const toml::node *>;

bool before(const toml::source_position &a, const toml::source_position &b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

// toml::table is ordered by key; errors should come in the order a person reads the file.
std::vector<Entry> in_file_order(const toml::table &t) {
  std::vector<Entry> v;
  for (auto &&[k, n] : t) v.emplace_back(&k, &n);
  std::sort(v.begin(), v.end(), [](const Entry &a, const Entry &b) {
    return before(a.first->source().begin, b.first->source().begin);
  });
  return v;
}

// A message is one line on stderr, printed before the program's main, and it quotes the file:
// values (found()), key names, and what toml++ saw where it stopped. Control characters in
// those bytes are escaped (\n, \t, \r, \xNN, NUL included), so that the file can neither
// break the line nor send the terminal escape sequences, and a NUL cannot cut the message short.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != 0x7f) {
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      char hex[5];
      snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

std::string quoted(std::string_view s) {
  std::string q = "\"";
  if (s.size() > 80) q.append(printable(s.substr(0, 77))).append("...");
  else q.append(printable(s));
  return q + "\"";
}

// What a node is, for "found ..." in messages.
std::string found(const toml::node &n) {
  switch (n.type()) {
    case toml::node_type::string: return quoted(n.as_string()->get());
    case toml::node_type::integer: return std::to_string(n.as_integer()->get());
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return n.as_boolean()->get() ? "true" : "false";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// "expected one of: a, b, c" plus a "did you mean" for a near miss.
std::string key_hint(std::string_view key, std::span<const char *const> known) {
  std::string s;
  for (const char *k : known) {
    if (edit_distance(key, k) <= 2 && std::string_view(k).size() > 2) {
      s = std::string("did you mean '") + k + "'? ";
      break;
    }
  }
  s += "expected one of: ";
  for (size_t i = 0; i < known.size(); ++i) s += (i ? ", " : "") + std::string(known[i]);
  return s;
}

std::string choices(std::span<const char *const> names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) s += i + 1 == names.size() ? " or " : ", ";
    s += quoted(names[i]);
  }
  return s;
}

constexpr const char *kRootKeys[] = {"mode", "on_error", "key_budget", "evict_rate",
                                             "promote_after", "sync_signal", "log", "region"};
constexpr const char *kRegionKeys[] = {
    "name", "path", "min_size", "max_size", "prot", "address", "caller", "anonymous", "shared",
    "action", "promote_after", "exec", "grants", "default", "enforce", "mprotect", "thread", "heap", "module",
    "gate"};
constexpr const char *kThreadKeys[] = {"name", "start", "right"};
constexpr const char *kGateKeys[] = {"module", "symbols", "allocate"};

constexpr const char *kModes[] = {"enforce", "audit", "off"};
constexpr const char *kOnErrors[] = {"fail", "passthrough"};
constexpr const char *kActions[] = {"emulate", "isolate", "passthrough"};
constexpr const char *kExecModes[] = {"ceiling", "exact"};
constexpr const char *kGrants[] = {"lazy", "eager"};
constexpr const char *kMprotectModes[] = {"kernel", "thread"};
constexpr const char *kRights[] = {"none", "r", "rw"};
constexpr const char *kRegionModes[] = {"enforce", "audit"};

// The least number of characters a glob can match (every token but '*' takes one).
size_t min_match_length(const char *glob) {
  size_t n = 0;
  for (const char *p = glob; *p; ++p) {
    if (*p == '*') continue;
    if (*p == '\\' && p[1]) ++p;
    else if (*p == '[') {
      const char *q = p + 1;
      if (*q == '!' || *q == '^') ++q;
      if (*q == ']') ++q;
      while (*q && *q != ']') ++q;
      if (*q) p = q;
    }
    ++n;
  }
  return n;
}

class Loader {
 public:
  Loader(const char *path, Policy *out, char *err, size_t err_len)
      : path_(path), out_(out), err_(err), err_len_(err_len) {}

  bool load(const toml::table &root);

  // For messages without a position in the file.
  bool fail_file(const char *fmt, ...) __attribute__((format(printf, 2, 3))) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err_len_) snprintf(err_, err_len_, "%s: %s", printable(path_).c_str(), printable(msg).c_str());
    return false;
  }

  bool fail_at(const toml::source_position &at, const char *fmt, ...) __attribute__((format(printf, 3, 4))) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err_len_)
      snprintf(err_, err_len_, "%s:%u:%u: %s", printable(path_).c_str(), at.line, at.column,
               printable(msg).c_str());
    return false;
  }

 private:
  bool fail(const toml::node &n, const char *fmt, ...) __attribute__((format(printf, 3, 4))) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail_at(n.source().begin, "%s", msg);
  }

  // "'key' in [[region]] 'x' must be <expected>, found <what the file has>"
  bool mismatch(const toml::node &n, std::string_view key, const std::string &expected) {
    return fail(n, "'%.*s'%s must be %s, found %s", static_cast<int>(key.size()), key.data(),
                ctx_.c_str(), expected.c_str(), found(n).c_str());
  }

  bool get_choice(const toml::node &n, std::string_view key, std::span<const char *const> names,
                  int *out) {
    if (const auto *s = n.as_string()) {
      for (size_t i = 0; i < names.size(); ++i)
        if (s->get() == names[i]) { *out = static_cast<int>(i); return true; }
    }
    return mismatch(n, key, "one of " + choices(names));
  }

  bool get_int(const toml::node &n, std::string_view key, int64_t lo, int64_t hi, int *out) {
    const auto *i = n.as_integer();
    if (!i || i->get() < lo || i->get() > hi)
      return mismatch(n, key, "an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    *out = static_cast<int>(i->get());
    return true;
  }

  bool get_bool(const toml::node &n, std::string_view key, bool *out) {
    const auto *b = n.as_boolean();
    if (!b) return mismatch(n, key, "true or false");
    *out = b->get();
    return true;
  }

  // A non-empty string of at most max characters, without control characters.
  bool get_text(const toml::node &n, std::string_view key, size_t max, const std::string &what,
                char *buf) {
    const auto *s = n.as_string();
    if (!s) return mismatch(n, key, what);
    const std::string &v = s->get();
    if (v.empty()) return mismatch(n, key, "non-empty: " + what);
    if (v.size() > max)
      return fail(n, "'%.*s'%s is %zu characters long; the limit is %zu", static_cast<int>(key.size()),
                  key.data(), ctx_.c_str(), v.size(), max);
    for (unsigned char c : v)
      if (c < 0x20 || c == 0x7f)
        return fail(n, "'%.*s'%s contains a control character", static_cast<int>(key.size()),
                    key.data(), ctx_.c_str());
    memcpy(buf, v.c_str(), v.size() + 1);
    return true;
  }

  bool get_size(const toml::node &n, std::string_view key, uint64_t *out) {
    static const std::string kWhat =
        "a size: bytes as an integer, or a string with a K, M, G or T suffix like \"64K\"";
    if (const auto *i = n.as_integer()) {
      if (i->get() < 0) return mismatch(n, key, kWhat);
      *out = static_cast<uint64_t>(i->get());
      return true;
    }
    if (const auto *s = n.as_string())
      if (parse_size_text(s->get().c_str(), out)) return true;
    return mismatch(n, key, kWhat);
  }

  bool unknown_key(const toml::key &k, std::span<const char *const> known) {
    return fail_at(k.source().begin, "unknown key '%s'%s (%s)", printable(k.str()).c_str(),
                   ctx_.c_str(), key_hint(k.str(), known).c_str());
  }

  bool load_setting(const toml::key &k, const toml::node &n);
  bool load_region(const toml::table &t, int index);
  bool load_region_key(const toml::key &k, const toml::node &n, Region *r);
  bool load_threads(const toml::key &k, const toml::node &n, Region *r);
  bool load_thread_rule(const toml::table &t, int index, Region *r);
  bool load_address(const toml::node &n, Region *r);
  bool load_gates(const toml::key &k, const toml::node &n, Region *r);
  bool load_gate(const toml::table &t, int index, Region *r);
  bool check_heap_region(const toml::table &t, const Region *r);

  const char *path_;
  Policy *out_;
  char *err_;
  size_t err_len_;
  std::string ctx_;  // " in [[region]] 'x'": where the entry being read is
  std::string region_ctx_;
  const toml::node *min_size_node_ = nullptr;
  const toml::node *max_size_node_ = nullptr;
  const toml::node *heap_node_ = nullptr;
  const toml::node *module_node_ = nullptr;
};

bool Loader::load(const toml::table &root) {
  const toml::node *regions = nullptr;
  const toml::key *regions_key = nullptr;
  // Settings first, whatever the order in the file: a region's promote_after inherits the global one.
  for (const auto &[k, n] : in_file_order(root)) {
    if (k->str() == "region") {
      regions = n;
      regions_key = k;
      continue;
    }
    if (!load_setting(*k, *n)) return false;
  }
  if (!regions) return true;

  const auto *arr = regions->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    if (arr && arr->empty()) return true;
    return fail_at(regions_key->source().begin,
                   "'region' must be an array of tables (written [[region]]), found %s",
                   found(*regions).c_str());
  }
  int index = 0;
  for (const auto &el : *arr) {
    ++index;
    if (index > kMaxRegions)
      return fail(el, "too many regions: at most %d are allowed", kMaxRegions);
    if (!load_region(*el.as_table(), index)) return false;
  }
  return true;
}

bool Loader::load_setting(const toml::key &k, const toml::node &n) {
  Settings &s = out_->settings;
  std::string_view key = k.str();
  int v;
  if (key == "mode") {
    if (!get_choice(n, key, kModes, &v)) return false;
    s.mode = static_cast<Mode>(v);
  } else if (key == "on_error") {
    if (!get_choice(n, key, kOnErrors, &v)) return false;
    s.on_error = static_cast<OnError>(v);
  } else if (key == "key_budget") {
    return get_int(n, key, 1, 14, &s.key_budget);
  } else if (key == "evict_rate") {
    return get_int(n, key, 0, 100, &s.evict_rate);
  } else if (key == "promote_after") {
    return get_int(n, key, 1, 1000, &s.promote_after);
  } else if (key == "sync_signal") {
    const std::string what = "a real-time signal: \"SIGRTMIN+n\", \"SIGRTMAX-n\" or a number from " +
                             std::to_string(SIGRTMIN) + " to " + std::to_string(SIGRTMAX);
    int sig = 0;
    if (const auto *i = n.as_integer()) {
      sig = i->get() < 0 || i->get() > 1000 ? -1 : static_cast<int>(i->get());
    } else if (const auto *str = n.as_string()) {
      if (!parse_signal_text(str->get().c_str(), &sig)) return mismatch(n, key, what);
    } else {
      return mismatch(n, key, what);
    }
    if (sig < SIGRTMIN || sig > SIGRTMAX) {
      if (n.is_string())
        return fail(n, "'sync_signal' %s is signal %d, outside the real-time range %d..%d",
                    found(n).c_str(), sig, SIGRTMIN, SIGRTMAX);
      return mismatch(n, key, what);
    }
    s.sync_signal = sig;
  } else if (key == "log") {
    char buf[kPathMax + 1];
    if (!get_text(n, key, kPathMax, "\"stderr\" or a file path", buf)) return false;
    s.log_to_stderr = strcmp(buf, "stderr") == 0;
    if (s.log_to_stderr) s.log_path[0] = 0;
    else memcpy(s.log_path, buf, sizeof buf);
  } else if (n.is_table()) {
    return fail_at(k.source().begin, "unknown table [%s] (the only tables are [[region]] and [[region.thread]])",
                   printable(key).c_str());
  } else {
    return unknown_key(k, kRootKeys);
  }
  return true;
}

bool Loader::load_region(const toml::table &t, int index) {
  Region *r = &out_->regions[out_->region_count];
  *r = Region{};
  r->line = t.source().begin.line;
  r->promote_after = out_->settings.promote_after;
  r->mode = out_->settings.mode;
  min_size_node_ = max_size_node_ = heap_node_ = module_node_ = nullptr;
  ctx_ = " in [[region]] #" + std::to_string(index);

  // The name and the action first: every later message names the region, and which keys are
  // allowed depends on the action.
  const toml::node *name = t.get("name");
  if (!name)
    return fail_at(t.source().begin,
                   "[[region]] #%d has no 'name': every region needs a unique name of up to %zu characters",
                   index, kNameMax);
  if (!get_text(*name, "name", kNameMax, "a string of up to 63 characters", r->name)) return false;
  for (int i = 0; i < out_->region_count; ++i)
    if (strcmp(out_->regions[i].name, r->name) == 0)
      return fail(*name, "duplicate region name '%s' (first used by the [[region]] on line %u)", r->name,
                  out_->regions[i].line);
  ctx_ = " in [[region]] '" + std::string(r->name) + "'";
  region_ctx_ = ctx_;

  const toml::node *action = t.get("action");
  if (!action)
    return fail_at(t.source().begin, "[[region]] '%s' has no 'action': expected action = %s", r->name,
                   choices(kActions).c_str());
  int v;
  if (!get_choice(*action, "action", kActions, &v)) return false;
  r->action = static_cast<Action>(v);

  for (const auto &[k, n] : in_file_order(t)) {
    if (k->str() == "name" || k->str() == "action") continue;
    if (!load_region_key(*k, *n, r)) return false;
  }

  if (r->heap && !check_heap_region(t, r)) return false;
  if (r->heap) {
    int heaps = 0;
    for (int i = 0; i < out_->region_count; ++i) heaps += out_->regions[i].heap;
    if (heaps == kMaxHeapRegions)
      return fail(*heap_node_, "too many heap regions%s: at most %d are allowed", ctx_.c_str(), kMaxHeapRegions);
  }
  if (!r->heap && (r->match & kMatchModule))
    return fail(*module_node_, "'module'%s applies to heap regions only (heap = true): a mapping is "
                "matched by its call stack with 'caller'", ctx_.c_str());
  // A heap region with gates may take only what is allocated inside them.
  if (r->match == 0 && !(r->heap && r->gate_count))
    return fail_at(t.source().begin,
                   r->heap ? "[[region]] '%s' has no match criteria: give at least one of min_size, max_size, "
                             "module, caller, or a [[region.gate]]"
                           : "[[region]] '%s' has no match criteria: give at least one of path, min_size, "
                             "max_size, prot, address, caller, anonymous, shared",
                   r->name);
  if ((r->match & kMatchMinSize) && (r->match & kMatchMaxSize) && r->min_size > r->max_size)
    return fail(*max_size_node_, "'max_size'%s (%llu bytes) is smaller than min_size (%llu bytes)",
                ctx_.c_str(), static_cast<unsigned long long>(r->max_size),
                static_cast<unsigned long long>(r->min_size));
  ++out_->region_count;
  return true;
}

bool Loader::load_region_key(const toml::key &k, const toml::node &n, Region *r) {
  std::string_view key = k.str();
  auto only_for = [&](const char *which) {
    return fail_at(k.source().begin, "'%s'%s applies to %s only (this region has action = \"%s\")",
                   std::string(key).c_str(), ctx_.c_str(), which, action_name(r->action));
  };
  int v;
  if (key == "path") {
    if (!get_text(n, key, kPathMax, "a glob on the mapped file's path, like \"/var/cache/*.dat\"", r->path))
      return false;
    if (r->path[0] != '/' && r->path[0] != '*' && r->path[0] != '?' && r->path[0] != '[')
      return fail(n, "'path'%s must be an absolute path glob (it is matched against the mapped file's full "
                  "path, like \"/var/cache/*.dat\"), found %s", ctx_.c_str(), found(n).c_str());
    r->match |= kMatchPath;
  } else if (key == "min_size") {
    if (!get_size(n, key, &r->min_size)) return false;
    min_size_node_ = &n;
    r->match |= kMatchMinSize;
  } else if (key == "max_size") {
    if (!get_size(n, key, &r->max_size)) return false;
    if (r->max_size == 0) return fail(n, "'max_size'%s is 0, which no mapping can match", ctx_.c_str());
    max_size_node_ = &n;
    r->match |= kMatchMaxSize;
  } else if (key == "prot") {
    const auto *s = n.as_string();
    if (!s || !parse_prot_text(s->get().c_str(), &r->prot))
      return mismatch(n, key, "\"none\" or a combination of the letters r, w, x like \"rw\"");
    r->match |= kMatchProt;
  } else if (key == "address") {
    if (!load_address(n, r)) return false;
    r->match |= kMatchAddress;
  } else if (key == "caller") {
    const auto *s = n.as_string();
    if (!s)
      return mismatch(n, key, "a symbol glob like \"lj_mcode_*\", or a module like \"libfoo.so*+0x1a2b0\" "
                              "or \"libfoo.so*+*\"");
    const char *why = nullptr;
    if (!parse_caller_pattern(s->get().c_str(), &r->caller, &why))
      return fail(n, "'caller'%s %s is not a valid pattern: %s", ctx_.c_str(), found(n).c_str(), why);
    r->match |= kMatchCaller;
  } else if (key == "anonymous") {
    if (!get_bool(n, key, &r->anonymous)) return false;
    r->match |= kMatchAnonymous;
  } else if (key == "shared") {
    if (!get_bool(n, key, &r->shared)) return false;
    r->match |= kMatchShared;
  } else if (key == "promote_after") {
    if (r->action != Action::kEmulate) return only_for("emulate regions");
    return get_int(n, key, 1, 1000, &r->promote_after);
  } else if (key == "exec") {
    if (r->action == Action::kPassthrough) return only_for("emulate and isolate regions");
    if (!get_choice(n, key, kExecModes, &v)) return false;
    r->exec = static_cast<ExecMode>(v);
  } else if (key == "grants") {
    if (r->action == Action::kPassthrough) return only_for("emulate and isolate regions");
    if (!get_choice(n, key, kGrants, &v)) return false;
    r->grants = static_cast<Grants>(v);
  } else if (key == "default") {
    if (r->action != Action::kIsolate) return only_for("isolate regions");
    if (!get_choice(n, key, kRights, &v)) return false;
    r->default_right = v;
  } else if (key == "enforce") {
    if (r->action != Action::kIsolate) return only_for("isolate regions");
    if (!get_choice(n, key, kRegionModes, &v)) return false;
    r->mode = v == 0 ? Mode::kEnforce : Mode::kAudit;
  } else if (key == "mprotect") {
    if (r->action != Action::kIsolate) return only_for("isolate regions");
    if (!get_choice(n, key, kMprotectModes, &v)) return false;
    r->mprotect = static_cast<MprotectMode>(v);
  } else if (key == "thread") {
    if (r->action != Action::kIsolate) return only_for("isolate regions");
    return load_threads(k, n, r);
  } else if (key == "gate") {
    if (r->action != Action::kIsolate) return only_for("isolate regions");
    return load_gates(k, n, r);
  } else if (key == "heap") {
    if (r->action != Action::kIsolate) return only_for("isolate regions");
    if (!get_bool(n, key, &r->heap)) return false;
    heap_node_ = &n;
  } else if (key == "module") {
    if (!get_text(n, key, kPathMax, "a glob on a module's file name, like \"libcrypto.so*\"", r->module))
      return false;
    if (strchr(r->module, '/'))
      return fail(n, "'module'%s is matched against the module's file name: leave out the directory, found %s",
                  ctx_.c_str(), found(n).c_str());
    module_node_ = &n;
    r->match |= kMatchModule;
  } else {
    return unknown_key(k, kRegionKeys);
  }
  return true;
}

// A heap region matches allocations: criteria about mappings, and what its own mprotect does,
// have nothing to apply to.
bool Loader::check_heap_region(const toml::table &t, const Region *r) {
  for (const char *key : {"path", "prot", "address", "anonymous", "shared", "exec"})
    if (const toml::node *n = t.get(key))
      return fail(*n, "'%s'%s does not apply to a heap region (heap = true matches allocations by min_size, "
                  "max_size, module and caller, not mappings)", key, ctx_.c_str());
  if (r->mprotect != MprotectMode::kKernel)
    return fail(*t.get("mprotect"), "'mprotect'%s must be \"kernel\" in a heap region (a JIT's code area "
                "is a mapping, not allocations)", ctx_.c_str());
  return true;
}

bool Loader::load_address(const toml::node &n, Region *r) {
  static const std::string kWhat =
      "an array of two addresses [lo, hi), like [\"0x7f0000000000\", \"0x7fff00000000\"]";
  const auto *arr = n.as_array();
  if (!arr || arr->size() != 2) return mismatch(n, "address", kWhat);
  uint64_t v[2];
  for (size_t i = 0; i < 2; ++i) {
    const toml::node &el = *arr->get(i);
    bool ok = false;
    if (const auto *s = el.as_string()) ok = parse_address_text(s->get().c_str(), &v[i]);
    else if (const auto *x = el.as_integer()) { ok = x->get() >= 0; v[i] = static_cast<uint64_t>(x->get()); }
    if (!ok)
      return fail(el, "'address'%s: each bound must be a hex string like \"0x7f0000000000\" or a "
                  "non-negative integer, found %s", ctx_.c_str(), found(el).c_str());
  }
  if (v[0] >= v[1])
    return fail(n, "'address'%s is [lo, hi) with lo below hi, found lo 0x%llx and hi 0x%llx", ctx_.c_str(),
                static_cast<unsigned long long>(v[0]), static_cast<unsigned long long>(v[1]));
  r->addr_lo = v[0];
  r->addr_hi = v[1];
  return true;
}

bool Loader::load_threads(const toml::key &k, const toml::node &n, Region *r) {
  const auto *arr = n.as_array();
  if (!arr || !arr->is_array_of_tables())
    return fail_at(k.source().begin, "'thread'%s must be an array of tables (written [[region.thread]]), found %s",
                   ctx_.c_str(), found(n).c_str());
  int index = 0;
  for (const auto &el : *arr) {
    ++index;
    if (index > kMaxThreadRules)
      return fail(el, "too many thread rules%s: at most %d are allowed", ctx_.c_str(), kMaxThreadRules);
    if (!load_thread_rule(*el.as_table(), index, r)) return false;
    ctx_ = region_ctx_;
  }
  return true;
}

bool Loader::load_gates(const toml::key &k, const toml::node &n, Region *r) {
  const auto *arr = n.as_array();
  if (!arr || !arr->is_array_of_tables())
    return fail_at(k.source().begin, "'gate'%s must be an array of tables (written [[region.gate]]), found %s",
                   ctx_.c_str(), found(n).c_str());
  int index = 0;
  for (const auto &el : *arr) {
    ++index;
    if (out_->gate_count == kMaxGates)
      return fail(el, "too many gates%s: at most %d are allowed in a policy", ctx_.c_str(), kMaxGates);
    if (!load_gate(*el.as_table(), index, r)) return false;
    ctx_ = region_ctx_;
  }
  return true;
}

bool Loader::load_gate(const toml::table &t, int index, Region *r) {
  Gate *g = &out_->gates[out_->gate_count];
  *g = Gate{};
  g->region = out_->region_count;
  g->line = t.source().begin.line;
  ctx_ = " in [[region.gate]] #" + std::to_string(index) + " of [[region]] '" + r->name + "'";
  for (const auto &[k, n] : in_file_order(t)) {
    std::string_view key = k->str();
    if (key == "module") {
      if (!get_text(*n, key, kPathMax, "a glob on a module's file name, like \"libcrypto.so*\"", g->module))
        return false;
      if (strchr(g->module, '/'))
        return fail(*n, "'module'%s is matched against the module's file name: leave out the directory, found %s",
                    ctx_.c_str(), found(*n).c_str());
    } else if (key == "symbols") {
      static const std::string kWhat = "a non-empty array of function-name globs, like [\"RSA_*\", \"PEM_read_*\"]";
      const auto *arr = n->as_array();
      if (!arr || arr->empty()) return mismatch(*n, key, kWhat);
      if (arr->size() > static_cast<size_t>(kMaxGateSymbols))
        return fail(*n, "'symbols'%s has %zu globs: at most %d are allowed", ctx_.c_str(), arr->size(), kMaxGateSymbols);
      for (const auto &el : *arr)
        if (!get_text(el, key, kStartGlobMax, kWhat.c_str(), g->symbols[g->symbol_count++])) return false;
    } else if (key == "allocate") {
      if (!get_bool(*n, key, &g->allocate)) return false;
    } else {
      return unknown_key(*k, kGateKeys);
    }
  }
  if (!g->module[0])
    return fail_at(t.source().begin, "[[region.gate]] #%d of [[region]] '%s' has no 'module': name the module "
                   "that defines the functions, like module = \"libcrypto.so*\"", index, r->name);
  if (!g->symbol_count)
    return fail_at(t.source().begin, "[[region.gate]] #%d of [[region]] '%s' has no 'symbols': name the "
                   "functions that open the region, like symbols = [\"RSA_*\"]", index, r->name);
  ++out_->gate_count;
  ++r->gate_count;
  return true;
}

bool Loader::load_thread_rule(const toml::table &t, int index, Region *r) {
  ThreadRule *rule = &r->threads[r->thread_rule_count];
  *rule = ThreadRule{};
  ctx_ = " in [[region.thread]] #" + std::to_string(index) + " of [[region]] '" + r->name + "'";
  bool has_right = false;
  for (const auto &[k, n] : in_file_order(t)) {
    std::string_view key = k->str();
    if (key == "name") {
      if (!get_text(*n, key, kNameMax, "a thread-name glob like \"worker-*\"", rule->name)) return false;
      // The kernel keeps 15 characters of a thread's name (comm).
      if (min_match_length(rule->name) > 15)
        return fail(*n, "'name'%s can only match names of %zu or more characters, but thread names (comm) "
                    "hold at most 15: it would never match", ctx_.c_str(), min_match_length(rule->name));
    } else if (key == "start") {
      if (!get_text(*n, key, kStartGlobMax, "a start-routine symbol glob like \"worker_main*\"", rule->start))
        return false;
    } else if (key == "right") {
      int v;
      if (!get_choice(*n, key, kRights, &v)) return false;
      rule->right = v;
      has_right = true;
    } else {
      return unknown_key(*k, kThreadKeys);
    }
  }
  if (!rule->name[0] && !rule->start[0])
    return fail_at(t.source().begin,
                   "[[region.thread]] #%d of [[region]] '%s' has neither 'name' nor 'start': give a thread-name "
                   "glob, a start-routine glob, or both", index, r->name);
  if (!has_right)
    return fail_at(t.source().begin, "[[region.thread]] #%d of [[region]] '%s' has no 'right': expected right = %s",
                   index, r->name, choices(kRights).c_str());
  ++r->thread_rule_count;
  return true;
}

bool read_file(const char *path, std::string *text, int *error) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { *error = errno; return false; }
  struct stat st;
  if (fstat(fd, &st) != 0) { *error = errno; close(fd); return false; }
  if (!S_ISREG(st.st_mode)) { *error = S_ISDIR(st.st_mode) ? EISDIR : EINVAL; close(fd); return false; }
  if (static_cast<size_t>(st.st_size) > kMaxFileBytes) { *error = EFBIG; close(fd); return false; }
  text->resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < text->size()) {
    ssize_t n = read(fd, text->data() + got, text->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { *error = errno; close(fd); return false; }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text->resize(got);
  close(fd);
  return true;
}

// For a file that is not valid TOML: is there a top-level line `on_error = "passthrough"`?
bool says_passthrough(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    size_t i = line.find_first_not_of(" \t");
    if (i == std::string_view::npos) continue;
    line.remove_prefix(i);
    if (line[0] == '[') return false;  // settings come before the first table
    if (line.substr(0, 8) != "on_error") continue;
    line.remove_prefix(8);
    line.remove_prefix(std::min(line.find_first_not_of(" \t"), line.size()));
    if (line.empty() || line[0] != '=') continue;
    line.remove_prefix(1);
    line.remove_prefix(std::min(line.find_first_not_of(" \t"), line.size()));
    if (line.substr(0, 13) != "\"passthrough\"" && line.substr(0, 13) != "'passthrough'") return false;
    line.remove_prefix(13);
    line.remove_prefix(std::min(line.find_first_not_of(" \t\r"), line.size()));
    return line.empty() || line[0] == '#';
  }
  return false;
}

// Caller criteria and start-routine rules name symbols, which takes libunwind: load it now, at
// start-up, so that a policy that cannot work fails here rather than never matching.
bool unwinder_available(const Policy &p, Loader *loader) {
  for (int i = 0; i < p.region_count; ++i) {
    const Region &r = p.regions[i];
    bool needs = (r.match & kMatchCaller) != 0;
    for (int t = 0; t < r.thread_rule_count; ++t) needs |= r.threads[t].start[0] != 0;
    if (!needs) continue;
    char why[512];
    if (caller_init(why, sizeof why)) return true;
    return loader->fail_at(toml::source_position{r.line, 1},
                           "[[region]] '%s' has a caller criterion or a start-routine rule, which need %s",
                           r.name, why);
  }
  return true;
}

}  // namespace

bool load_policy(const char *path, Policy *out, char *err, size_t err_len) {
  init_defaults(out);
  if (err_len) err[0] = 0;
  if (!path || !*path) {
    if (err_len) snprintf(err, err_len, "(no file): the configuration path is empty");
    return false;
  }
  Loader loader(path, out, err, err_len);
  if (strlen(path) > kSourcePathMax) return loader.fail_file("path longer than %zu characters", kSourcePathMax);

  std::string text;
  int error = 0;
  if (!read_file(path, &text, &error)) {
    if (error == EFBIG) return loader.fail_file("larger than %zu bytes: not a policy file", kMaxFileBytes);
    return loader.fail_file("cannot read: %s", strerror(error));
  }
  return load_policy_text(path, text.data(), text.size(), out, err, err_len);
}

bool load_policy_text(const char *name, const char *text, size_t len, Policy *out, char *err, size_t err_len) {
  init_defaults(out);
  if (err_len) err[0] = 0;
  if (!name || !*name) {
    if (err_len) snprintf(err, err_len, "(no file): the configuration path is empty");
    return false;
  }
  Loader loader(name, out, err, err_len);
  if (strlen(name) > kSourcePathMax) return loader.fail_file("path longer than %zu characters", kSourcePathMax);
  if (len > kMaxFileBytes) return loader.fail_file("larger than %zu bytes: not a policy file", kMaxFileBytes);
  std::string_view view(text ? text : "", text ? len : 0);

  toml::parse_result parsed = toml::parse(view, std::string_view(name));
  if (!parsed) {
    const toml::parse_error &e = parsed.error();
    loader.fail_at(e.source().begin, "invalid TOML: %s", printable(e.description()).c_str());
    out->settings.on_error = says_passthrough(view) ? OnError::kPassthrough : OnError::kFail;
    return false;
  }

  const toml::table &root = parsed.table();
  if (loader.load(root) && unwinder_available(*out, &loader)) {
    memcpy(out->source, name, strlen(name) + 1);
    return true;
  }
  // Keep on_error when the file states it validly, so the caller can honour it.
  OnError on_error = OnError::kFail;
  if (const auto *s = root.get_as<std::string>("on_error"); s && s->get() == "passthrough")
    on_error = OnError::kPassthrough;
  init_defaults(out);
  out->settings.on_error = on_error;
  return false;
}

}  // namespace mpk::cfg

// match.cc - region and thread-rule matching: no allocation, runs on interposed paths.
#include <sys/mman.h>

#include "policy.h"

namespace mpk::cfg {
namespace {

constexpr int kProtBits = PROT_READ | PROT_WRITE | PROT_EXEC;

bool is_shared(int flags) {
  int type = flags & MAP_TYPE;
  return type == MAP_SHARED || type == MAP_SHARED_VALIDATE;
}

// Everything except the caller criterion, which is the only expensive one.
bool cheap_criteria_hold(const Region &r, const MappingInfo &m) {
  if ((r.match & kMatchPath) && (!m.path || !glob_match(r.path, m.path, true))) return false;
  if ((r.match & kMatchMinSize) && m.len < r.min_size) return false;
  if ((r.match & kMatchMaxSize) && m.len > r.max_size) return false;
  if ((r.match & kMatchProt) && (m.prot & kProtBits) != r.prot) return false;
  if (r.match & kMatchAddress) {
    // Written so that addr + len cannot overflow.
    if (m.addr < r.addr_lo || m.addr >= r.addr_hi || m.len > r.addr_hi - m.addr) return false;
  }
  if (r.match & (kMatchAnonymous | kMatchShared)) {
    if (m.flags == kFlagsUnknown) return false;  // cannot tell: the criterion does not hold
    if ((r.match & kMatchAnonymous) && ((m.flags & MAP_ANONYMOUS) != 0) != r.anonymous) return false;
    if ((r.match & kMatchShared) && is_shared(m.flags) != r.shared) return false;
  }
  return true;
}

}  // namespace

bool region_matches(const Region &region, const MappingInfo &info) {
  if (!cheap_criteria_hold(region, info)) return false;
  // Last: unwinding the stack costs microseconds, so only a region that is otherwise a match
  // pays for it.
  if (region.match & kMatchCaller) return caller_matches(region.caller, info.skip_module_base);
  return true;
}

const Region *match_region(const Policy &policy, const MappingInfo &info) {
  for (int i = 0; i < policy.region_count; ++i)
    if (!policy.regions[i].heap && region_matches(policy.regions[i], info)) return &policy.regions[i];
  return nullptr;
}

int thread_right(const Region &region, const char *thread_name, const char *start_symbol) {
  for (int i = 0; i < region.thread_rule_count; ++i) {
    const ThreadRule &rule = region.threads[i];
    if (rule.name[0] && !glob_match(rule.name, thread_name, false)) continue;
    if (rule.start[0] && !glob_match(rule.start, start_symbol, false)) continue;
    return rule.right;
  }
  return region.default_right;
}

const char *mode_name(Mode m) {
  switch (m) {
    case Mode::kEnforce: return "enforce";
    case Mode::kAudit: return "audit";
    case Mode::kOff: return "off";
  }
  return "?";
}

const char *on_error_name(OnError e) { return e == OnError::kFail ? "fail" : "passthrough"; }

const char *action_name(Action a) {
  switch (a) {
    case Action::kEmulate: return "emulate";
    case Action::kIsolate: return "isolate";
    case Action::kPassthrough: return "passthrough";
  }
  return "?";
}

const char *exec_name(ExecMode e) { return e == ExecMode::kCeiling ? "ceiling" : "exact"; }
const char *grants_name(Grants g) { return g == Grants::kLazy ? "lazy" : "eager"; }
const char *mprotect_mode_name(MprotectMode m) { return m == MprotectMode::kKernel ? "kernel" : "thread"; }

const char *right_name(int right) {
  switch (right) {
    case kRightNone: return "none";
    case kRightRead: return "r";
    case kRightReadWrite: return "rw";
  }
  return "?";
}

const char *prot_string(int prot, char *buf) {
  if ((prot & kProtBits) == 0) {
    buf[0] = 'n'; buf[1] = 'o'; buf[2] = 'n'; buf[3] = 'e'; buf[4] = 0;
    return buf;
  }
  buf[0] = (prot & PROT_READ) ? 'r' : '-';
  buf[1] = (prot & PROT_WRITE) ? 'w' : '-';
  buf[2] = (prot & PROT_EXEC) ? 'x' : '-';
  buf[3] = 0;
  return buf;
}

}  // namespace mpk::cfg

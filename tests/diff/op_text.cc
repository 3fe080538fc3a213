// op_text.cc - how ops and regions read in a trace. Positions are pages of the reservation
// ("p12", "p12+2048"), never addresses, so traces from different processes line up.
#include <sys/mman.h>

#include <cstdio>

#include "program.h"

namespace mpkdiff {
namespace {

std::string position(uint64_t offset) {
  char buf[48];
  if (offset % kPage) {
    std::snprintf(buf, sizeof buf, "p%llu+%llu", static_cast<unsigned long long>(offset / kPage),
                  static_cast<unsigned long long>(offset % kPage));
  } else {
    std::snprintf(buf, sizeof buf, "p%llu", static_cast<unsigned long long>(offset / kPage));
  }
  return buf;
}

std::string length(uint64_t len) {
  char buf[32];
  if (len % kPage == 0 && len) {
    std::snprintf(buf, sizeof buf, "%llup", static_cast<unsigned long long>(len / kPage));
  } else {
    std::snprintf(buf, sizeof buf, "%llub", static_cast<unsigned long long>(len));
  }
  return buf;
}

std::string mmap_flags(int flags) {
  std::string s = flags & MAP_SHARED ? "shared" : "private";
  if (flags & MAP_FIXED_NOREPLACE) s += ",noreplace";
  else if (flags & MAP_FIXED) s += ",fixed";
  return s;
}

std::string mremap_flags(int flags) {
  if (!flags) return "0";
  std::string s;
  if (flags & MREMAP_MAYMOVE) s += "maymove";
  if (flags & MREMAP_FIXED) s += s.empty() ? "fixed" : "|fixed";
  return s;
}

}  // namespace

std::string prot_name(int prot) {
  if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%x", prot);
    return buf;
  }
  if (prot == PROT_NONE) return "none";
  std::string s;
  if (prot & PROT_READ) s += 'r';
  if (prot & PROT_WRITE) s += 'w';
  if (prot & PROT_EXEC) s += 'x';
  return s;
}

const char *kind_name(RegionKind kind) {
  switch (kind) {
    case RegionKind::kAnonPrivate: return "anon-private";
    case RegionKind::kAnonShared: return "anon-shared";
    case RegionKind::kFileSharedRw: return "file-shared-rdwr";
    case RegionKind::kFilePrivateRo: return "file-private-rdonly";
    case RegionKind::kFileSharedRo: return "file-shared-rdonly";
  }
  return "?";
}

const char *kind_name(ProgramKind kind) {
  return kind == ProgramKind::kSubRange ? "sub-range" : "classic";
}

const char *kind_choice_name(KindChoice kinds) {
  switch (kinds) {
    case KindChoice::kMixed: return "mixed";
    case KindChoice::kClassic: return "classic";
    case KindChoice::kSubRange: return "sub-range";
  }
  return "?";
}

std::string describe_region(int index, const RegionSpec &r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "region r%d %s %s %up", index, kind_name(r.kind),
                position(r.first_page * kPage).c_str(), r.pages);
  std::string s = buf;
  if (r.file_pages && r.file_pages != r.pages) {
    std::snprintf(buf, sizeof buf, " (file %up)", r.file_pages);
    s += buf;
  }
  return s;
}

std::string describe_op(const Op &op) {
  std::string s = "t" + std::to_string(op.thread) + " ";
  switch (op.kind) {
    case OpKind::kMprotect:
      s += "mprotect " + position(op.addr) + " " + length(op.len) + " " + prot_name(op.prot);
      break;
    case OpKind::kMunmap:
      s += "munmap " + position(op.addr) + " " + length(op.len);
      break;
    case OpKind::kMremap:
      s += "mremap " + position(op.addr) + " " + length(op.len) + " -> " + length(op.new_len) + " " +
           mremap_flags(op.flags);
      if (op.flags & MREMAP_FIXED) s += " to " + position(op.new_addr);
      break;
    case OpKind::kMmapFixed:
      s += "mmap " + position(op.addr) + " " + length(op.len) + " " + prot_name(op.prot) + " " +
           mmap_flags(op.flags);
      break;
    case OpKind::kProbeRead:
      s += "load " + position(op.addr);
      break;
    case OpKind::kProbeWrite: {
      char buf[16];
      std::snprintf(buf, sizeof buf, " 0x%02x", op.value);
      s += "store " + position(op.addr) + buf;
      break;
    }
    case OpKind::kSysRead:
      s += "read(pipe) into " + position(op.addr) + " " + length(op.len);
      break;
    case OpKind::kSysWrite:
      s += "write(pipe) from " + position(op.addr) + " " + length(op.len);
      break;
    case OpKind::kFork:
      s += std::string("fork, child ") + (op.write ? "stores to " : "loads ") + position(op.addr);
      break;
    case OpKind::kSigmask:
      s += op.write ? "block all signals" : "unblock all signals";
      break;
  }
  if (op.note[0]) s += std::string(" [") + op.note + "]";
  return s;
}

}  // namespace mpkdiff

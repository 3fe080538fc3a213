#include "cpu.h"

#include <cpuid.h>

#include "pkey_gate.h"
#include "sys.h"

namespace mpk {

namespace {
CpuInfo probe() {
  CpuInfo c;
  unsigned a, b, cx, d;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, cx, d);
    c.pku = (cx >> 3) & 1u;
    c.ospke = (cx >> 4) & 1u;
  }
  if (c.pku && __get_cpuid_max(0, nullptr) >= 0xd) {
    __cpuid_count(0xd, 9, a, b, cx, d);
    c.pkru_xsave_offset = b;
  }
  if (c.pku && c.ospke) {
    int k = sys::pkey_alloc(0, 0);
    if (k > 0) {
      c.pkey_syscalls = true;
      pkey_gate_call(SYS_pkey_free, k);  // through the gate: a filter inherited across exec may guard k
    }
  }
  return c;
}
}  // namespace

const CpuInfo &cpu_info() {
  static const CpuInfo info = probe();
  return info;
}

}  // namespace mpk

// defaults.cc - the policy that applies without a configuration file.
#include <csignal>
#include <cstring>

#include "policy.h"

namespace mpk::cfg {

void init_defaults(Policy *out) {
  // Field by field rather than `*out = Policy{}`: a Policy is large (see sizeof), and a
  // temporary would cost that much stack. The regions are left alone: none is read past
  // region_count, and the loader resets each one it fills, so a program started under the shim
  // does not write (and fault in) a quarter of a megabyte of unused regions.
  out->settings = Settings{};
  out->settings.sync_signal = SIGRTMAX - 2;  // glibc computes SIGRTMAX at run time
  out->region_count = 0;
  out->gate_count = 0;  // the gates, like the regions, are reset by the loader as it fills them
  out->source[0] = 0;
}

}  // namespace mpk::cfg

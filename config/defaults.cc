// defaults.cc - the policy that applies without a configuration file.
#include <csignal>
#include <cstring>

#include "policy.h"

namespace mpk::cfg {

void init_defaults(Policy *out) {
  // Field by field rather than `*out = Policy{}`: a Policy is large (see sizeof), and a
  // temporary would cost that much stack.
  out->settings = Settings{};
  out->settings.sync_signal = SIGRTMAX - 2;  // glibc computes SIGRTMAX at run time
  out->region_count = 0;
  for (auto &r : out->regions) r = Region{};
  out->source[0] = 0;
}

}  // namespace mpk::cfg

#include "gate_rights.h"

#include "fast_path.h"

namespace mpk {

constinit thread_local uint32_t t_gate_keys __attribute__((tls_model("initial-exec"))) = 0;
constinit thread_local uint16_t t_gate_depth[kHwKeys] __attribute__((tls_model("initial-exec"))) = {};

void gate_settle() {
  if (EngineState *st = state())
    if (ThreadRecord *rec = self_rec(*st)) settle(*st, rec);
}

}  // namespace mpk

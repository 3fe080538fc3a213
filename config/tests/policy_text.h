// policy_text.h - test helper: load a policy from text written to a temporary file.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "policy.h"

namespace mpk::cfg::test {

struct Loaded {
  std::unique_ptr<Policy> policy{new Policy};
  bool ok = false;
  std::string error;  // with the directory removed: "p.toml:3:1: ..."
};

inline Loaded load_file(const std::string &path) {
  Loaded l;
  char err[1024];
  l.ok = load_policy(path.c_str(), l.policy.get(), err, sizeof err);
  l.error = err;
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && l.error.compare(0, slash + 1, path.substr(0, slash + 1)) == 0)
    l.error.erase(0, slash + 1);
  return l;
}

inline Loaded load_text(const std::string &text, const std::string &name = "p.toml") {
  char dir[] = "/tmp/mpk_config_test.XXXXXX";
  if (!mkdtemp(dir)) abort();
  std::string path = std::string(dir) + "/" + name;
  FILE *f = fopen(path.c_str(), "w");
  fwrite(text.data(), 1, text.size(), f);
  fclose(f);
  Loaded l = load_file(path);
  unlink(path.c_str());
  rmdir(dir);
  return l;
}

}  // namespace mpk::cfg::test

// maps_perms.h - the page-table permissions of the mapping holding an address, as
// /proc/self/maps prints them ("rw-p"), or "" if no mapping holds it. For both simulated-key
// suites: the page table is what still protects when a sync falls back.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

inline std::string maps_perms(const void *addr) {
  auto a = reinterpret_cast<uintptr_t>(addr);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long lo, hi;
    char perms[8];
    if (std::sscanf(line.c_str(), "%lx-%lx %7s", &lo, &hi, perms) == 3 && a >= lo && a < hi) return perms;
  }
  return "";
}

// shim_sim_util.cc - the shim's simulated register, statistics page and /proc readers.
#include "shim_sim_util.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sched.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "key_backend.h"

namespace shimsim {

namespace {

constexpr const char *kPkruSymbol = "_ZN3mpk10t_sim_pkruE";  // mpk::t_sim_pkru

struct ShimModule {
  std::string path;
  long pkru_offset = -1;  // in the library's TLS block
  std::string why;
};

// st_value of a TLS symbol in an ELF file's .symtab: its offset in the module's TLS block.
long tls_symbol_offset(const std::string &path, const char *symbol, std::string *why) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (file.size() < sizeof(Elf64_Ehdr)) return *why = "cannot read " + path, -1;
  const auto *eh = reinterpret_cast<const Elf64_Ehdr *>(file.data());
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_shoff + size_t{eh->e_shnum} * sizeof(Elf64_Shdr) > file.size())
    return *why = path + " is not a 64-bit ELF file", -1;
  const auto *sh = reinterpret_cast<const Elf64_Shdr *>(file.data() + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
    const Elf64_Shdr &strtab = sh[sh[i].sh_link];
    const auto *syms = reinterpret_cast<const Elf64_Sym *>(file.data() + sh[i].sh_offset);
    size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
    for (size_t j = 0; j < n; ++j) {
      if (ELF64_ST_TYPE(syms[j].st_info) != STT_TLS || syms[j].st_name >= strtab.sh_size) continue;
      if (std::strcmp(file.data() + strtab.sh_offset + syms[j].st_name, symbol) == 0)
        return static_cast<long>(syms[j].st_value);
    }
  }
  return *why = std::string("no TLS symbol ") + symbol + " in the .symtab of " + path + " (stripped?)", -1;
}

const ShimModule &shim_module() {
  static const ShimModule m = [] {
    ShimModule r;
    dl_iterate_phdr(
        [](dl_phdr_info *info, size_t, void *p) {
          auto *mod = static_cast<ShimModule *>(p);
          if (info->dlpi_name && std::strstr(info->dlpi_name, "libmpk_shim")) mod->path = info->dlpi_name;
          return mod->path.empty() ? 0 : 1;
        },
        &r);
    if (r.path.empty()) r.why = "libmpk_shim.so is not loaded (run under LD_PRELOAD)";
    else r.pkru_offset = tls_symbol_offset(r.path, kPkruSymbol, &r.why);
    return r;
  }();
  return m;
}

// This thread's TLS block of the shim (static TLS: allocated with the thread).
void *shim_tls_block() {
  struct Find {
    const char *path;
    void *block;
  } f{shim_module().path.c_str(), nullptr};
  dl_iterate_phdr(
      [](dl_phdr_info *info, size_t, void *p) {
        auto *find = static_cast<Find *>(p);
        if (info->dlpi_name && std::strcmp(info->dlpi_name, find->path) == 0) {
          find->block = info->dlpi_tls_data;
          return 1;
        }
        return 0;
      },
      &f);
  return f.block;
}

}  // namespace

const mpk::StatsPage *stats() {
  static const mpk::StatsPage *page = []() -> const mpk::StatsPage * {
    char path[64];
    std::snprintf(path, sizeof path, "/dev/shm/libmpk-%d.stats", getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nullptr;
    void *p = mmap(nullptr, sizeof(mpk::StatsPage), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? nullptr : static_cast<const mpk::StatsPage *>(p);
  }();
  return page;
}

bool simulating() {
  return stats() && stats()->active.load() && stats()->backend.load() == static_cast<uint32_t>(mpk::Backend::kSimulated);
}

uint64_t counter(const std::atomic<uint64_t> mpk::Stats::*which) {
  return stats() ? (stats()->counters.*which).load() : 0;
}

uint64_t counter(mpk::Hot which) { return stats() ? mpk::hot_total(stats()->hot, which) : 0; }

int region_key(const void *addr) {
  if (!stats()) return -1;
  auto a = reinterpret_cast<uint64_t>(addr);
  for (const mpk::RegionSlot &s : stats()->regions)
    if (s.used.load(std::memory_order_acquire) && s.start == a) return s.key.load();
  return -1;
}

bool shim_pkru(uint32_t *out, std::string *why) {
  // The block's address is fixed for the thread's life: look it up once per thread.
  thread_local uint32_t *reg = nullptr;
  if (!reg) {
    const ShimModule &m = shim_module();
    if (m.pkru_offset < 0) return *why = m.why, false;
    void *block = shim_tls_block();
    if (!block) return *why = "no TLS block of libmpk_shim.so in this thread", false;
    reg = reinterpret_cast<uint32_t *>(static_cast<char *>(block) + m.pkru_offset);
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  *out = *reinterpret_cast<volatile uint32_t *>(reg);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return true;
}

int own_rights(int key) {
  uint32_t v;
  std::string why;
  return shim_pkru(&v, &why) ? pkru_rights(v, key) : -1;
}

int rights_of(int prot) { return (prot & PROT_WRITE) ? 2 : (prot & PROT_READ) ? 1 : 0; }

const char *rights_name(int r) {
  switch (r) {
    case 0: return "NONE";
    case 1: return "READ";
    case 2: return "READ|WRITE";
    default: return "unreadable";
  }
}

void spin_pause() {
  sched_yield();
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
}


}  // namespace shimsim

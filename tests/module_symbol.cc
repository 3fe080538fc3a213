#include "module_symbol.h"

#include <elf.h>
#include <link.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

namespace mpktest {

namespace {

struct Found {
  bool ok = false;
  bool tls = false;
  unsigned long value = 0;
};

// The symbol's type and value in an ELF file's .symtab.
Found symtab_lookup(const std::string &path, const char *symbol, std::string *why) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (file.size() < sizeof(Elf64_Ehdr)) return *why = "cannot read " + path, Found{};
  const auto *eh = reinterpret_cast<const Elf64_Ehdr *>(file.data());
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_shoff + size_t{eh->e_shnum} * sizeof(Elf64_Shdr) > file.size())
    return *why = path + " is not a 64-bit ELF file", Found{};
  const auto *sh = reinterpret_cast<const Elf64_Shdr *>(file.data() + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
    const Elf64_Shdr &strtab = sh[sh[i].sh_link];
    const auto *syms = reinterpret_cast<const Elf64_Sym *>(file.data() + sh[i].sh_offset);
    size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
    for (size_t j = 0; j < n; ++j) {
      if (syms[j].st_name >= strtab.sh_size || syms[j].st_shndx == SHN_UNDEF) continue;
      if (std::strcmp(file.data() + strtab.sh_offset + syms[j].st_name, symbol) != 0) continue;
      return Found{true, ELF64_ST_TYPE(syms[j].st_info) == STT_TLS, syms[j].st_value};
    }
  }
  return *why = std::string("no symbol ") + symbol + " in the .symtab of " + path + " (stripped?)", Found{};
}

struct Module {
  const char *part;
  std::string path;
  uintptr_t base = 0;
  void *tls = nullptr;
};

}  // namespace

void *module_symbol(const char *module, const char *symbol, std::string *why) {
  Module m{module};
  dl_iterate_phdr(
      [](dl_phdr_info *info, size_t, void *p) {
        auto *mod = static_cast<Module *>(p);
        if (!info->dlpi_name || !std::strstr(info->dlpi_name, mod->part)) return 0;
        mod->path = info->dlpi_name;
        mod->base = info->dlpi_addr;
        mod->tls = info->dlpi_tls_data;
        return 1;
      },
      &m);
  if (m.path.empty()) return *why = std::string(module) + " is not loaded", nullptr;
  Found f = symtab_lookup(m.path, symbol, why);
  if (!f.ok) return nullptr;
  if (!f.tls) return reinterpret_cast<void *>(m.base + f.value);
  if (!m.tls) return *why = "no TLS block of " + m.path + " in this thread", nullptr;
  return static_cast<char *>(m.tls) + f.value;
}

}  // namespace mpktest

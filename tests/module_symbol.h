// module_symbol.h - the address of a loaded library's symbol, hidden ones included, for tests that
// look inside libmpk_shim.so from the program's side (its simulated register, its roots).
//
// The value comes from the library file's .symtab (the build does not strip it): a data symbol
// lives at the module's load address plus its value; a TLS symbol (initial-exec, static TLS) at
// its value inside the calling thread's TLS block of the module, which dl_iterate_phdr gives.
#pragma once

#include <string>

namespace mpktest {

// The address of `symbol` in the loaded module whose path contains `module`, in the calling
// thread for a TLS symbol; nullptr with the reason in *why.
void *module_symbol(const char *module, const char *symbol, std::string *why);

}  // namespace mpktest

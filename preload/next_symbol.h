// next_symbol.h - the definition of a symbol that the shim's own definition hides, found without
// dlsym.
//
// The allocator's wrappers must reach whatever malloc comes after the shim in the lookup order:
// glibc's, or a sanitizer runtime's or jemalloc's when the program links one. dlsym(RTLD_NEXT) is
// not usable there: the dynamic linker itself calls malloc (with its own lock held), and dlsym may
// allocate. next_symbol() reads the link map (_r_debug) and the objects' dynamic symbol tables
// directly: no lock, no allocation, no system call, so it can run on the first malloc of the
// process, wherever that happens.
#pragma once

namespace mpk::shim {

// The first default-version definition of `name` in the objects loaded after the shim, in load
// order (the order the dynamic linker searches the initial objects); nullptr if there is none.
void *next_symbol(const char *name);
// next_symbol(name), looked up on the first call and kept in *slot (wrappers that may run before
// the shim starts: a lookup is lock-free, so racing first calls find the same function).
template <typename F>
F next_cached(const char *name, F *slot) {
  F f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  if (!f) {
    f = reinterpret_cast<F>(next_symbol(name));
    __atomic_store_n(slot, f, __ATOMIC_RELEASE);
  }
  return f;
}

// The first such definition in all loaded objects, in load order: what the dynamic linker binds
// an ordinary reference to.
void *global_symbol(const char *name);

}  // namespace mpk::shim

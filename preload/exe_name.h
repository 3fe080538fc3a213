// exe_name.h - module names as the policy's `module` globs see them: file names, no directory.
#pragma once

namespace mpk::shim {

// The part of path after its last '/'.
const char *basename_of(const char *path);
// The program's own file name (the basename of /proc/self/exe, read on first use; "" if it cannot
// be read): the name the dynamic linker leaves empty for the main program.
const char *exe_name();

}  // namespace mpk::shim

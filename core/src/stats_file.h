// stats_file.h - the statistics file written at exit (MPK_STATS=path, "%p" becomes the pid).
//
// The path is read once, early (programs may rewrite their environment: PHP's CLI moves it to set
// the process title), and the file written with raw system calls at exit.
#pragma once

namespace mpk {

// Reads MPK_STATS now. Call from a constructor.
void stats_file_remember();
// Writes render(buf, cap)'s JSON, plus a newline, to the remembered path (nothing if none).
void stats_file_write(int (*render)(char *buf, int cap));

}  // namespace mpk

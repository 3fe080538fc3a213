// sanitizer_options.cc - the sanitizers' defaults for every test program of a sanitized build
// (MPK_SANITIZE), so that ctest, scripts/test and a test run by hand behave alike. The runtimes
// call these at start-up; options in TSAN_OPTIONS / ASAN_OPTIONS / UBSAN_OPTIONS still apply on top.
//
// ThreadSanitizer: the first report ends the program with status 66 (a test that races fails);
// both stacks of a lock-order inversion are printed. Nothing is suppressed.
extern "C" {

__attribute__((visibility("default"), used)) const char *__tsan_default_options() {
  return "halt_on_error=1:exitcode=66:second_deadlock_stack=1:report_signal_unsafe=1";
}

__attribute__((visibility("default"), used)) const char *__asan_default_options() {
  return "halt_on_error=1:detect_leaks=0";
}

__attribute__((visibility("default"), used)) const char *__ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1";
}

}  // extern "C"

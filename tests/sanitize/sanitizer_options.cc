// sanitizer_options.cc - the sanitizers' defaults for every test program of a sanitized build
// (MPK_SANITIZE), so that ctest, scripts/test and a test run by hand behave alike. The runtimes
// call these at start-up; options in TSAN_OPTIONS / ASAN_OPTIONS / UBSAN_OPTIONS still apply on top.
//
// ThreadSanitizer: the first report ends the program with status 66 (a test that races fails);
// both stacks of a lock-order inversion are printed. Nothing is suppressed.
//
// AddressSanitizer and UndefinedBehaviorSanitizer: the same, exit status 66 on the first report,
// leaks included (LeakSanitizer, at exit). verify_asan_link_order=0: mpk_sim_shim_tests runs with
// the ASan-built shim in LD_PRELOAD, which puts the shim ahead of the ASan runtime the program
// links, and ASan refuses to start when its runtime is not first. That order is the one wanted
// (the shim's mprotect, pthread_create, sigaction... come first and reach ASan's interceptors,
// then libc, through dlsym(RTLD_NEXT)), and the runtime is still initialised before the shim's
// constructor runs: from the program's .preinit_array. A program not built with ASan needs the
// runtime first in LD_PRELOAD instead (README.md, "Build and test").
extern "C" {

__attribute__((visibility("default"), used)) const char *__tsan_default_options() {
  return "halt_on_error=1:exitcode=66:second_deadlock_stack=1:report_signal_unsafe=1";
}

__attribute__((visibility("default"), used)) const char *__asan_default_options() {
  return "halt_on_error=1:exitcode=66:detect_leaks=1:verify_asan_link_order=0";
}

__attribute__((visibility("default"), used)) const char *__ubsan_default_options() {
  return "halt_on_error=1:exitcode=66:print_stacktrace=1";
}

}  // extern "C"

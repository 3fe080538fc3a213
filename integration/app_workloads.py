"""The programs the integration tests and scripts/bench-apps run natively and under the shim.

Each workload is a real program that calls mprotect() on the same ranges over and over (a
JIT writing machine code, opcache write-protecting its shared memory, Ruby's YJIT making one
page of its code area writable and then whole halves of it executable) and prints one line,
starting with a known prefix, that must be the same in every run. Everything else a program
prints (sysbench's timing report, warnings) is ignored.
"""

import dataclasses
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "workloads")

# PHP: opcache loaded without any php.ini (-n), its shared memory write-protected between
# compilations (protect_memory) and the tracing JIT on.
PHP_OPCACHE_ARGS = (
    "-n", "-d", "zend_extension=opcache.so", "-d", "opcache.enable_cli=1",
    "-d", "opcache.protect_memory=1", "-d", "opcache.jit=tracing",
    "-d", "opcache.jit_buffer_size=64M",
)

# Ruby 3.1 with YJIT. --disable-gems: RubyGems (and did_you_mean, error_highlight) are not
# loaded, so the run needs nothing from /usr/lib/ruby and does not depend on the gems installed;
# the script itself is what YJIT compiles. The code area's pattern is the same either way.
RUBY_ARGS = ("--disable-gems", "--yjit")
RUBY_YJIT_POLICY = os.path.join(os.path.dirname(HERE), "config", "examples", "ruby-yjit.toml")

# Run sizes. "test" keeps the emulated (QEMU TCG) runs of the test suite short; "bench" runs
# longer so that wall times are well above start-up noise; "bench_emulated" is the benchmark
# inside QEMU TCG, where the programs run 20 to 100 times slower.
SIZES = {
    "test": {"luajit": ("1000", "1"), "sysbench_events": 60, "php": ("30", "10"),
             "ruby": ("20", "30")},
    "bench_emulated": {"luajit": ("600", "1"), "sysbench_events": 30, "php": ("20", "10"),
                       "ruby": ("20", "30")},
    "bench": {"luajit": ("1500", "1"), "sysbench_events": 100, "php": ("40", "10"),
              "ruby": ("100", "30")},
}

# The fewest mprotect calls each workload makes at "test" size through the public symbol,
# about two thirds of what `strace -c -f -e trace=mprotect` counts natively on Debian 12
# (LuaJIT 2594, sysbench 1 thread 3289, 2 threads 3310, PHP 4135, Ruby/YJIT 13867). A shim
# that sees fewer is being bypassed (for example by RTLD_DEEPBIND).
MIN_MPROTECT_CALLS = {"luajit": 1700, "sysbench_1t": 2100, "sysbench_2t": 2100, "php_opcache": 2700,
                      "ruby_yjit": 9200}

# Ranges a workload protects whole, again and again, while it also protects parts of them: the
# shim should make each a page group at most once (statistics: promotions <= this), whatever
# sub-ranges the program protects in between. Ruby 3.1's YJIT maps one area of 256 MiB
# (--yjit-exec-mem-size) with mmap(PROT_READ|PROT_EXEC), makes it writable and fills it, makes
# it executable again, and from then on mprotects single pages of it read/write and its two
# 128 MiB halves (inline and outlined code) read/exec: the area and its two halves.
CODE_AREAS = {"ruby_yjit": 3}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str           # short id, used in test ids and the benchmark table
    argv: tuple         # the command, programs named by absolute real path
    prefix: str         # the deterministic output line starts with this
    files: tuple        # host files the QEMU guest needs besides the programs' libraries
    copies: tuple       # host folders the guest needs too (scripts/qemu-run --copy)
    min_mprotect: int   # see MIN_MPROTECT_CALLS
    code_areas: int = 0  # see CODE_AREAS; 0: not checked
    shim_env: tuple = ()  # settings ("K=V") for the run under the shim only (a policy)


def _program(name):
    path = shutil.which(name, path="/usr/bin:/bin:/usr/local/bin")
    return os.path.realpath(path) if path else None


def _php_extension_dir(php):
    out = subprocess.run([php, "-n", "-r", "echo ini_get('extension_dir');"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else ""


def _ruby_has_yjit(ruby):
    out = subprocess.run([ruby, *RUBY_ARGS, "-e", "exit(RubyVM::YJIT.enabled? ? 0 : 1)"],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0


def _ruby_start_files(ruby):
    """The extensions Ruby loads at start (its encoding tables), which the QEMU guest needs."""
    out = subprocess.run([ruby, "--disable-gems", "-rrbconfig", "-e",
                          "print RbConfig::CONFIG['archdir']"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return ()
    enc = os.path.join(out.stdout.strip(), "enc")
    files = (os.path.join(enc, "encdb.so"), os.path.join(enc, "trans", "transdb.so"))
    return tuple(f for f in files if os.path.isfile(f))


def missing_programs():
    """Names of the programs (or PHP's opcache) this host lacks; empty when all are there."""
    missing = [p for p in ("luajit", "sysbench", "php", "ruby") if _program(p) is None]
    php = _program("php")
    if php and not os.path.isfile(os.path.join(_php_extension_dir(php), "opcache.so")):
        missing.append("php opcache.so (php8.2-opcache)")
    ruby = _program("ruby")
    if ruby and not _ruby_has_yjit(ruby):
        missing.append("ruby with YJIT (ruby3.1)")
    return missing


def workloads(size="test"):
    """The workloads, in a fixed order. Call missing_programs() first."""
    s = SIZES[size]
    luajit, sysbench, php = _program("luajit"), _program("sysbench"), _program("php")
    ruby = _program("ruby")
    lua_script = os.path.join(SCRIPTS, "luajit_compile.lua")
    sb_script = os.path.join(SCRIPTS, "sysbench_jit.lua")
    php_script = os.path.join(SCRIPTS, "php_opcache_jit.php")
    php_files = (php, php_script, os.path.join(_php_extension_dir(php), "opcache.so"))
    # Debian's PHP reads time zones from the system database; without it PHP warns at start.
    php_copies = ("/usr/share/zoneinfo",) if os.path.isdir("/usr/share/zoneinfo") else ()
    result = [Workload("luajit", (luajit, lua_script) + s["luajit"], "luajit_compile ",
                       (luajit, lua_script), (), MIN_MPROTECT_CALLS["luajit"])]
    for threads in (1, 2):
        # --time=0: sysbench stops after 10 s by default, which would cut the event count.
        argv = (sysbench, sb_script, f"--threads={threads}", f"--events={s['sysbench_events']}",
                "--time=0", "run")
        result.append(Workload(f"sysbench_{threads}t", argv, "sysbench_jit ", (sysbench, sb_script), (),
                               MIN_MPROTECT_CALLS[f"sysbench_{threads}t"]))
    result.append(Workload("php_opcache", (php,) + PHP_OPCACHE_ARGS + (php_script,) + s["php"],
                           "php_opcache_jit ", php_files, php_copies,
                           MIN_MPROTECT_CALLS["php_opcache"]))
    rb_script = os.path.join(SCRIPTS, "ruby_yjit_compile.rb")
    result.append(Workload("ruby_yjit", (ruby,) + RUBY_ARGS + (rb_script,) + s["ruby"],
                           "ruby_yjit_compile ", (ruby, rb_script) + _ruby_start_files(ruby), (),
                           MIN_MPROTECT_CALLS["ruby_yjit"], CODE_AREAS["ruby_yjit"]))
    if size == "bench":
        # The same program under config/examples/ruby-yjit.toml (the code area's toggles change the
        # calling thread's right only). Benchmarks only: test_ruby_yjit.py runs the policy itself.
        result.append(Workload("ruby_yjit_policy", (ruby,) + RUBY_ARGS + (rb_script,) + s["ruby"],
                               "ruby_yjit_compile ", (ruby, rb_script) + _ruby_start_files(ruby), (),
                               MIN_MPROTECT_CALLS["ruby_yjit"],
                               shim_env=("MPK_CONFIG=" + RUBY_YJIT_POLICY,)))
    return result


def deterministic_lines(output, prefix):
    """The lines of a run's output that must match between runs."""
    return [line.rstrip("\r") for line in output.splitlines() if line.startswith(prefix)]


def host_has_pku():
    """True when this CPU has protection keys (the `pku` flag in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "pku" in line.split() for line in f)
    except OSError:
        return False

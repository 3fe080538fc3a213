"""What scripts/bench-core, bench-scaling and bench-apps share: where the keys come from, the
model that prices PKRU writes where the CPU has no PKU, the shim's statistics, the toggle runs,
the scaling run and its plot, tables and goals.

Keys. Where the CPU has PKU (cpuinfo flags pku and ospke, and pkey_alloc works) everything runs on
hardware keys and every figure is measured. Elsewhere the engine runs on simulated keys
(MPK_SIMULATE=1): a software PKRU per thread, tagging pages as a plain mprotect, nothing refused;
every PKRU write is still counted. A figure for libmpk or the shim is then

    modelled: software measured on this CPU + N WRPKRU x 10 ns

where N is the PKRU writes the engine counted over the timed work; the same figure is also given
at 100 cycles per WRPKRU (33.3 ns at 3 GHz). Native figures are always measured.
"""

import ctypes
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BUILD = os.path.join(REPO, "build-bench")

WRPKRU_NS = 10.0              # the model: one WRPKRU costs 10 ns (30 cycles at 3 GHz)
WRPKRU_NS_SLOW = 100.0 / 3.0  # the pessimistic price: 100 cycles at 3 GHz
SLOW_NOTE = "100 cycles per WRPKRU (33.3 ns at 3 GHz)"

SCALING_THREADS = (1, 2, 4, 8)


class BenchError(Exception):
    """A run that cannot count: a program failed, or the shim was not active."""


def log(prog, msg):
    print(f"{prog}: {msg}", file=sys.stderr, flush=True)


# --- keys ------------------------------------------------------------------------------------

def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _pkey_alloc_works():
    libc = ctypes.CDLL(None, use_errno=True)
    sys_pkey_alloc, sys_pkey_free = 330, 331   # x86-64
    key = libc.syscall(sys_pkey_alloc, 0, 0)
    if key < 0:
        return False, os.strerror(ctypes.get_errno())
    libc.syscall(sys_pkey_free, key)
    return True, ""


def detect_keys():
    """{"mode": "hardware"|"simulated", "why": text}: hardware where the CPU and kernel have
    protection keys, simulated keys (MPK_SIMULATE=1) elsewhere."""
    flags = _cpu_flags()
    if platform.machine() not in ("x86_64", "AMD64"):
        return {"mode": "simulated", "why": f"not x86-64 ({platform.machine()})"}
    missing = [f for f in ("pku", "ospke") if f not in flags]
    if missing:
        return {"mode": "simulated", "why": "this CPU has no PKU (cpuinfo lacks " + " and ".join(missing) + ")"}
    ok, err = _pkey_alloc_works()
    if not ok:
        return {"mode": "simulated", "why": f"pkey_alloc fails here ({err})"}
    return {"mode": "hardware", "why": "this CPU has PKU (pku, ospke) and pkey_alloc works"}


def key_env(keys):
    return {"MPK_SIMULATE": "1"} if keys["mode"] == "simulated" else {}


def clean_env(extra=None):
    """The environment for a measured program: no preload or MPK_* setting of our own caller."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MPK_")}
    env.update(extra or {})
    return env


def machine_description():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = f", load average {os.getloadavg()[0]:.1f} at the start"
    except OSError:
        load = ""
    return f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}{load}"


# --- the model -------------------------------------------------------------------------------

def fmt_count(n):
    """A WRPKRU count per operation: 4, 4.02."""
    if n is None:
        return "?"
    s = f"{n:.2f}".rstrip("0").rstrip(".")
    return s or "0"


def label(keys, n):
    """How an mpk figure was obtained."""
    if keys["mode"] == "hardware":
        return "measured on hardware keys"
    return f"modelled: software measured on this CPU + {fmt_count(n)} WRPKRU x 10 ns"


def model_ns(software_ns, n, price=WRPKRU_NS):
    return software_ns + n * price


# --- builds ----------------------------------------------------------------------------------

def ensure_build(prog, build, targets):
    """Configures BUILD (Release) if it is not a build folder yet, then builds TARGETS."""
    if not os.path.isfile(os.path.join(build, "CMakeCache.txt")):
        log(prog, f"configuring {build} (Release)")
        r = subprocess.run(["cmake", "-S", REPO, "-B", build, "-DCMAKE_BUILD_TYPE=Release"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
            raise BenchError(f"cmake configure of {build} failed")
    log(prog, f"building {' '.join(targets)} in {build}")
    r = subprocess.run(["cmake", "--build", build, "-j", str(os.cpu_count() or 2), "--target", *targets],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise BenchError("build failed")


def find_built(build, name):
    for cand in (os.path.join(build, name), os.path.join(build, "bench", name),
                 os.path.join(build, "integration", name)):
        if os.path.isfile(cand):
            return os.path.realpath(cand)
    raise BenchError(f"{name} not found under {build}")


# --- the shim's statistics -------------------------------------------------------------------

def read_stats_files(pattern_dir):
    """Every statistics JSON a run left in its folder (one per process)."""
    out = []
    for path in sorted(glob.glob(os.path.join(pattern_dir, "stats.*.json"))):
        with open(path) as f:
            text = f.read()
        try:
            out.append(json.loads(text))
        except ValueError as e:
            raise BenchError(f"{path}: not JSON ({e}): {text[:200]!r}")
    return out


def check_shim_stats(stats, keys, what, min_emulated_share=0.5, min_calls=0):
    """The shim's statistics of one run, summed over its processes. Raises BenchError when the
    shim was inactive: no statistics file, "active" false, the wrong backend, no mprotect call
    emulated (or fewer than MIN_EMULATED_SHARE of them), or fewer than MIN_CALLS mprotect calls
    seen (the program's calls bypassed it)."""
    if not stats:
        raise BenchError(f"{what}: the shim wrote no statistics file (MPK_STATS): it was not loaded, "
                         "or the program did not exit normally")
    if not any(s.get("active") for s in stats):
        raise BenchError(f"{what}: the shim was inactive (\"active\": false, backend "
                         f"{stats[0].get('backend')!r}): it passed every call to the kernel")
    want = "hardware" if keys["mode"] == "hardware" else "simulated"
    backends = sorted({s.get("backend") for s in stats if s.get("active")})
    if backends != [want]:
        raise BenchError(f"{what}: the shim ran on {'/'.join(map(str, backends))} keys, not {want}")
    calls = sum(s.get("mprotect_calls", 0) for s in stats)
    emulated = sum(s.get("mprotect_emulated", 0) for s in stats)
    if calls < min_calls:
        raise BenchError(f"{what}: the shim saw {calls} mprotect calls, fewer than the {min_calls} the program "
                         "makes: they bypassed it")
    if emulated == 0 or emulated < min_emulated_share * calls:
        raise BenchError(f"{what}: the shim emulated {emulated} of {calls} mprotect calls: it was bypassed")
    return {"wrpkru": sum(s.get("wrpkru", 0) for s in stats), "mprotect_calls": calls,
            "mprotect_emulated": emulated}


# --- the toggle program ----------------------------------------------------------------------

def run_toggle(toggle_bin, shim, keys, mode, pages, threads, seconds, simulate=None):
    """One run of mpk_legacy_toggle_bench. mode: "native" or "shim". simulate: force simulated
    keys under the shim (None: as KEYS says). Returns its JSON result, plus for the shim the
    checked statistics. Raises BenchError."""
    argv = [toggle_bin, "--pages", str(pages), "--threads", str(threads), "--seconds", str(seconds)]
    what = f"toggle program, {pages} page(s), {threads} thread(s), {mode}"
    with tempfile.TemporaryDirectory(prefix="mpk-bench.") as tmp:
        env = clean_env()
        run_keys = keys
        if mode == "shim":
            sim = keys["mode"] == "simulated" if simulate is None else simulate
            run_keys = {"mode": "simulated" if sim else "hardware"}
            env.update({"LD_PRELOAD": shim, "MPK_STATS": os.path.join(tmp, "stats.%p.json")})
            if sim:
                env["MPK_SIMULATE"] = "1"
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=max(120, 20 * seconds))
        if r.returncode != 0:
            raise BenchError(f"{what}: exit status {r.returncode}: {(r.stdout + r.stderr)[-800:]}")
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"{what}: no result line in {r.stdout[-500:]!r}")
        if mode == "shim":
            res["process_stats"] = check_shim_stats(read_stats_files(tmp), run_keys, what)
            if not res.get("stats_page"):
                raise BenchError(f"{what}: no live statistics page (/dev/shm/libmpk-PID.stats): the "
                                 "PKRU writes of the timed loop cannot be counted")
            if not res.get("active"):
                raise BenchError(f"{what}: the shim's statistics page says it was inactive")
            timed = 2 * res["pairs"]
            if res["legacy_emulated"] < 0.9 * timed:
                raise BenchError(f"{what}: only {res['legacy_emulated']} of the {timed} timed mprotect calls "
                                 f"were emulated: the shim did not serve the toggles (the program's counts: "
                                 f"{ {k: res.get(k) for k in ('pairs', 'wrpkru', 'legacy_calls', 'legacy_emulated')} }; "
                                 f"the shim's for the whole run: {res['process_stats']})")
        res["mode"] = mode
        res["keys"] = run_keys["mode"] if mode == "shim" else "none"
        return res


def modelled_wall_ns(res, price, cpus):
    """A run's wall time with every PKRU write priced. The threads' writes add to their own CPUs'
    time: the sum is spread over min(threads, CPUs)."""
    if res["keys"] != "simulated":
        return float(res["wall_ns"])
    return res["wall_ns"] + res["wrpkru"] * price / min(res["threads"], cpus)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --- scaling ---------------------------------------------------------------------------------

def scaling_run(prog, toggle_bin, shim, keys, runs, seconds, threads=SCALING_THREADS):
    """Aggregate toggle rate, 1-page private range per thread, natively and under the shim,
    interleaved. Returns a JSON-able dict."""
    samples = {(m, t): [] for m in ("native", "shim") for t in threads}
    total = runs * len(threads) * 2
    done = 0
    for rep in range(runs):
        for t in threads:
            for m in (("native", "shim") if (rep + t) % 2 == 0 else ("shim", "native")):
                done += 1
                log(prog, f"scaling [{done}/{total}] {m}, {t} thread(s)")
                samples[(m, t)].append(run_toggle(toggle_bin, shim, keys, m, 1, t, seconds))
    return {"keys": keys, "cpus": os.cpu_count() or 1, "runs": runs, "seconds": seconds,
            "threads": list(threads),
            "samples": [{"mode": m, "threads": t, "runs": v} for (m, t), v in samples.items()]}


def scaling_rows(result):
    cpus = result["cpus"]
    by = {(s["mode"], s["threads"]): s["runs"] for s in result["samples"]}
    rows = []
    for t in result["threads"]:
        nat = by[("native", t)]
        shim = by[("shim", t)]
        row = {"threads": t,
               "native": median([2 * r["pairs"] * 1e9 / r["wall_ns"] for r in nat]),
               "shim_software": median([2 * r["pairs"] * 1e9 / r["wall_ns"] for r in shim]),
               "shim": median([2 * r["pairs"] * 1e9 / modelled_wall_ns(r, WRPKRU_NS, cpus) for r in shim]),
               "shim_slow": median([2 * r["pairs"] * 1e9 / modelled_wall_ns(r, WRPKRU_NS_SLOW, cpus)
                                    for r in shim]),
               "wrpkru_per_toggle": median([r["wrpkru"] / (2 * r["pairs"]) for r in shim])}
        rows.append(row)
    return rows


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt_rate(v):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def scaling_report(result):
    """(text, goals) for a scaling result."""
    keys = result["keys"]
    rows = scaling_rows(result)
    sim = keys["mode"] == "simulated"
    lines = ["Scaling: aggregate mprotect toggles per second (a toggle is one mprotect call), each thread toggling",
             "its own 1-page range (mprotect RW, one write, mprotect R), natively and under the shim;",
             f"medians of {plural(result['runs'], 'interleaved run')} of {result['seconds']:g} s; "
             f"{result['cpus']} CPUs", ""]
    if sim:
        head = ["threads", "native /s", "shim software /s", "WRPKRU/toggle", "shim /s", "shim/native",
                "shim /s @100cyc", "shim/native @100cyc", "shim figure (WRPKRU per toggle)"]
    else:
        head = ["threads", "native /s", "shim /s", "WRPKRU/toggle", "shim/native", "shim figure"]
    table = []
    for r in rows:
        ratio = f"{r['shim'] / r['native']:.1f}x" if r["shim"] and r["native"] else "n/a"
        if sim:
            ratio_slow = f"{r['shim_slow'] / r['native']:.1f}x" if r["shim_slow"] and r["native"] else "n/a"
            table.append([str(r["threads"]), fmt_rate(r["native"]), fmt_rate(r["shim_software"]),
                          fmt_count(r["wrpkru_per_toggle"]), fmt_rate(r["shim"]), ratio, fmt_rate(r["shim_slow"]),
                          ratio_slow, label(keys, r["wrpkru_per_toggle"])])
        else:
            table.append([str(r["threads"]), fmt_rate(r["native"]), fmt_rate(r["shim"]),
                          fmt_count(r["wrpkru_per_toggle"]), ratio, label(keys, r["wrpkru_per_toggle"])])
    lines += format_table(head, table)
    if sim:
        lines += ["", "shim /s: the timed wall time plus every PKRU write of the run priced at 10 ns, the writes of",
                  "all threads spread over min(threads, CPUs); @100cyc: the same at 100 cycles per WRPKRU",
                  "(33.3 ns at 3 GHz). Native figures are measured."]
    one = next(r for r in rows if r["threads"] == 1)
    eight = next((r for r in rows if r["threads"] == 8), None)
    goals = []
    if eight:
        ok = eight["shim"] is not None and one["shim"] is not None and eight["shim"] >= one["shim"]
        goals.append((ok, "scaling: the shim's aggregate toggle rate with 8 threads is no lower than with 1 "
                          f"({fmt_rate(eight['shim'])} vs {fmt_rate(one['shim'])} toggles/s"
                          f"{', modelled at 10 ns per WRPKRU' if sim else ''}; on {result['cpus']} CPUs)"))
    return "\n".join(lines), goals


def scaling_plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = scaling_rows(result)
    sim = result["keys"]["mode"] == "simulated"
    xs = [r["threads"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(xs, [r["native"] for r in rows], "o-", label="native mprotect (measured)")
    if sim:
        ns = {fmt_count(r["wrpkru_per_toggle"]) for r in rows}
        n = ns.pop() if len(ns) == 1 else "N"
        ax.plot(xs, [r["shim"] for r in rows], "s-",
                label=f"under libmpk_shim.so ({label(result['keys'], None).replace('?', n)} per toggle)")
        ax.plot(xs, [r["shim_slow"] for r in rows], "s--",
                label="under libmpk_shim.so (modelled: WRPKRU at 100 cycles, 33.3 ns)")
        ax.plot(xs, [r["shim_software"] for r in rows], ":", color="grey",
                label="under libmpk_shim.so, software only (simulated keys, measured)")
    else:
        ax.plot(xs, [r["shim"] for r in rows], "s-", label="under libmpk_shim.so (hardware keys, measured)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_yscale("log")
    ax.set_xlabel(f"threads, each toggling its own 1-page range ({result['cpus']} CPUs)")
    ax.set_ylabel("mprotect toggles per second, all threads (median)")
    ax.set_title("mprotect RW/R toggles: native vs under the shim" + (" (simulated keys, modelled)" if sim else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- output ----------------------------------------------------------------------------------

def format_table(head, rows, left=()):
    """Columns right-aligned, but the last (a label) and those in LEFT left-aligned."""
    n = len(head)
    w = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(n)]

    def line(cells):
        parts = [c.ljust(w[i]) if i in left else c.rjust(w[i]) for i, c in enumerate(cells[:-1])] + [cells[-1]]
        return "  ".join(parts).rstrip()
    return [line(head), "  ".join("-" * x for x in w), *(line(r) for r in rows)]


def print_goals(goals, enforce):
    """Prints PASS/FAIL lines; returns the number of failures."""
    failed = 0
    print("\nGoals" + ("" if enforce else " (--no-goals: printed only, the exit status ignores them)") + ":")
    for ok, text in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
        failed += 0 if ok else 1
    return failed


def format_table_indent(lines, n=3):
    return [" " * n + line for line in lines]

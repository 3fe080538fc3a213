"""Unmodified programs under libmpk_shim.so: same results, and their toggles emulated.

Each workload (integration/workloads/) is run natively and under the shim through
scripts/mpk-run with MPK_STATS. Its deterministic output line must be identical, and where
the CPU has protection keys the shim's statistics must show that at least 95% of the
program's mprotect calls were done as PKRU updates. On a CPU without PKU the shim cannot
emulate anything natively (pkey_alloc fails and every call passes through), so the same
comparison runs a second time inside a QEMU guest whose emulated CPU has PKU.
"""

import json
import os
import subprocess

import pytest

import app_workloads
import guest_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPK_RUN = os.path.join(REPO, "scripts", "mpk-run")
NAMES = ["luajit", "sysbench_1t", "sysbench_2t", "php_opcache"]

STATS_KEYS = ("version", "pid", "mprotect_calls", "mprotect_emulated", "mprotect_passthrough",
              "groups", "resident_groups", "hw_keys", "evictions", "lazy_grants",
              "revocation_signals", "efault_repairs", "violations", "regions")
MIN_EMULATED_SHARE = 0.95

NO_PKU_REASON = ("this CPU lacks PKU (pkey_alloc fails), so natively the shim passes every "
                 "mprotect through and there is no emulation to check; the emulated-CPU run "
                 "(test_guest_emulation) checks it")


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("MPK_")}
    return env


def run_native(argv, cwd, env=None, timeout=300):
    proc = subprocess.run(argv, cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          errors="replace", timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def expect_same_output(workload, native, other, what):
    (n_status, n_out), (o_status, o_out) = native, other
    assert n_status == 0, f"{workload.name} failed natively ({n_status}):\n{n_out[-2000:]}"
    assert o_status == 0, f"{workload.name} failed {what} ({o_status}):\n{o_out[-2000:]}"
    n_lines = app_workloads.deterministic_lines(n_out, workload.prefix)
    o_lines = app_workloads.deterministic_lines(o_out, workload.prefix)
    assert len(n_lines) == 1, f"{workload.name}: no result line natively:\n{n_out[-2000:]}"
    assert "mismatches=0" in n_lines[0] or "mismatches=" not in n_lines[0], n_lines[0]
    assert o_lines == n_lines, f"{workload.name}: output differs {what}:\n{o_out[-2000:]}"


def expect_emulated(workload, stats_text, where):
    assert stats_text is not None, f"{workload.name}: the shim wrote no MPK_STATS file ({where})"
    stats = json.loads(stats_text)
    missing = [k for k in STATS_KEYS if k not in stats]
    assert not missing, f"{workload.name}: stats lack {missing}"
    calls, emulated = stats["mprotect_calls"], stats["mprotect_emulated"]
    assert calls >= workload.min_mprotect, (
        f"{workload.name}: the shim saw {calls} mprotect calls, but the program makes at least"
        f" {workload.min_mprotect}: its calls bypass the shim ({where})")
    assert emulated / calls >= MIN_EMULATED_SHARE, (
        f"{workload.name}: only {emulated} of {calls} mprotect calls emulated"
        f" ({emulated / calls:.1%} < {MIN_EMULATED_SHARE:.0%}) ({where}); stats: {stats}")
    assert stats["mprotect_emulated"] + stats["mprotect_passthrough"] == calls, stats
    assert stats["violations"] == 0, f"{workload.name}: violations without a policy: {stats}"


# ---------------------------------------------------------------------------------------
# Native runs
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def native_results(workloads, shim, tmp_path_factory):
    """Each workload natively and under the shim, run once and shared by the native tests."""
    cache = {}

    def get(name):
        if name not in cache:
            w = workloads[name]
            work = tmp_path_factory.mktemp(name)
            stats = work / "stats.json"
            native = run_native(w.argv, work)
            shimmed = run_native((MPK_RUN, "--shim", shim, "--stats", str(stats), "--") + w.argv,
                                 work)
            cache[name] = (native, shimmed, stats.read_text() if stats.exists() else None)
        return cache[name]
    return get


@pytest.mark.parametrize("name", NAMES)
def test_native_same_output(name, workloads, native_results):
    native, shimmed, _ = native_results(name)
    expect_same_output(workloads[name], native, shimmed, "under the shim")


@pytest.mark.parametrize("name", NAMES)
def test_native_emulation(name, workloads, native_results, host_has_pku):
    if not host_has_pku:
        pytest.skip(NO_PKU_REASON)
    _, _, stats = native_results(name)
    expect_emulated(workloads[name], stats, "native run")


@pytest.mark.parametrize("name", NAMES)
def test_noprotect_same_output(name, workloads, noprotect, native_results, tmp_path):
    """The benchmark's ceiling preload must not change what the programs compute."""
    native, _, _ = native_results(name)
    env = clean_env()
    env["LD_PRELOAD"] = noprotect
    other = run_native(workloads[name].argv, tmp_path, env=env)
    expect_same_output(workloads[name], native, other, "under libmpk_noprotect.so")


# ---------------------------------------------------------------------------------------
# The same in a QEMU guest with an emulated CPU that has PKU (only where the host lacks it)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def guest_results(workloads, shim, host_has_pku, tmp_path_factory):
    if host_has_pku:
        pytest.skip("the host CPU has PKU: the native tests check emulation already")
    work = tmp_path_factory.mktemp("guest")
    runs, files, copies = [], [shim], []
    for name in NAMES:
        w = workloads[name]
        files += w.files
        copies += w.copies
        runs.append(guest_runs.GuestRun(f"{name}.native", w.argv))
        stats = f"/tmp/{name}.stats.json"
        runs.append(guest_runs.GuestRun(f"{name}.shim", guest_runs.under_shim(w.argv, shim, stats),
                                        fetch=stats))
    return guest_runs_or_fail(runs, files, work, copies, timeout=420)


def guest_runs_or_fail(runs, files, work, copies=(), timeout=600):
    """guest_runs.run() for a test: a guest that cannot run the commands fails the test."""
    try:
        return guest_runs.run(runs, files, str(work), copies=copies, timeout=timeout)
    except RuntimeError as e:
        pytest.fail(f"QEMU guest run failed: {e}")


@pytest.mark.parametrize("name", NAMES)
def test_guest_same_output(name, workloads, guest_results):
    native, shimmed = guest_results[f"{name}.native"], guest_results[f"{name}.shim"]
    expect_same_output(workloads[name], (native.status, native.output),
                       (shimmed.status, shimmed.output), "under the shim (QEMU guest with PKU)")


@pytest.mark.parametrize("name", NAMES)
def test_guest_emulation(name, workloads, guest_results):
    expect_emulated(workloads[name], guest_results[f"{name}.shim"].fetched, "QEMU guest with PKU")


def code_intruder_runs(name, intruder, argv_for):
    """Guest runs of a JIT program under its policy with a thread that writes the code area it was
    not given (libmpk_intruder.so, INTRUDER_CODE=1), in enforce and in audit mode. argv_for(stats)
    is the program's command under the policy, writing statistics to `stats`."""
    return [guest_runs.GuestRun(f"{name}.intruder.{mode}", guest_runs.with_env(
        (f"LD_PRELOAD={intruder}", "INTRUDER_CODE=1", f"MPK_MODE={mode}"),
        (guest_runs.BASH,) + tuple(argv_for(f"/tmp/{name}.{mode}.json")))) for mode in ("enforce", "audit")]


def expect_code_intruder(workload, region, results, name):
    """The runs of code_intruder_runs(): enforce stops the program at the intruder's write, audit
    reports it and the program's output is the native run's."""
    enforce, audit, native = results[f"{name}.intruder.enforce"], results[f"{name}.intruder.audit"], results[f"{name}.native"]
    native = (native.status, native.output)
    report = f"'intruder' wrote to region '{region}'"
    assert enforce.status != 0 and report in enforce.output, (
        f"{workload.name}: enforce mode did not stop the intruder ({enforce.status}):\n{enforce.output[-2000:]}")
    assert report in audit.output, f"{workload.name}: audit mode did not report the intruder:\n{audit.output[-2000:]}"
    expect_same_output(workload, native, (audit.status, audit.output), "with an intruder in audit mode")

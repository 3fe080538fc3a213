"""SpiderMonkey's JIT (gjs, libmozjs-102) under libmpk_shim.so with config/examples/spidermonkey.toml.

SpiderMonkey reserves just under 2 GiB PROT_NONE for all JIT code (in a static constructor of
libgjs, before the shim starts: the shim adopts that mapping when it starts), commits 64 KiB
chunks of it with mmap(MAP_FIXED, PROT_READ|PROT_EXEC), and mprotects the page-rounded range of
each piece of code read/write and back to read/execute around every write. With the policy's
mprotect = "thread" the whole reservation is one isolated group whose toggles change only the
calling thread's right:

  - the deterministic output line is the same natively and under the shim;
  - the reservation is the policy's region (one isolated group, kind isolate-thread) and >= 95%
    of the mprotect calls are emulated, none cut a group apart, no page-level exception;
  - in enforce mode not one violation: SpiderMonkey writes code only from a thread that made the
    code writable itself (its helper threads included).

Where these run follows test_apps.py: natively on a CPU with PKU, otherwise in one boot of a QEMU
guest whose emulated CPU has PKU; and natively on simulated keys (MPK_SIMULATE=1) on any CPU,
which checks the engine's decisions and the output, not protection.
"""

import glob
import json
import os
import shutil

import pytest

import app_workloads
import guest_runs
import test_apps

NAME = "gjs_jit"
POLICY = os.path.join(test_apps.REPO, "config", "examples", "spidermonkey.toml")
SCRIPT = os.path.join(test_apps.REPO, "integration", "workloads", "gjs_jit.js")
MIN_MPROTECT = 600  # the script below makes about 1,750 calls natively (strace -c)


@pytest.fixture(scope="session")
def gjs():
    path = shutil.which("gjs", path="/usr/bin:/bin")
    if path is None:
        pytest.fail("gjs is missing (Debian package gjs; scripts/setup installs it)")
    gjs = os.path.realpath(path)
    # gjs loads GLib's introspection data at start, whatever the script: the guest needs it.
    typelibs = tuple(d for d in glob.glob("/usr/lib/*/girepository-1.0") + glob.glob("/usr/lib/*/gjs/girepository-1.0")
                     if os.path.isdir(d))
    return app_workloads.Workload(NAME, (gjs, SCRIPT, "400", "300"), "gjs_jit ", (gjs, SCRIPT), typelibs, MIN_MPROTECT)


def argv_under_policy(workload, shim, stats):
    return (test_apps.MPK_RUN, "--shim", shim, "--config", POLICY, "--stats", str(stats), "--") + workload.argv


def expect_one_code_area(workload, stats_text, where):
    assert stats_text is not None, f"{workload.name}: the shim wrote no MPK_STATS file ({where})"
    stats = json.loads(stats_text)
    calls = stats["mprotect_calls"]
    assert calls >= workload.min_mprotect, f"{workload.name}: only {calls} mprotect calls seen ({where}): {stats}"
    assert stats["mprotect_emulated"] / calls >= test_apps.MIN_EMULATED_SHARE, (
        f"{workload.name}: {stats['mprotect_emulated']} of {calls} calls emulated ({where}): {stats}")
    assert stats["exceptions"] == 0 and stats["dissolves"] == 0, f"{workload.name}: ({where}): {stats}"
    assert stats["violations"] == 0, f"{workload.name}: code written without a write right ({where}): {stats}"
    assert stats["promotions"] == 1, f"{workload.name}: not one code area ({where}): {stats}"


@pytest.fixture(scope="session")
def native_run(gjs, tmp_path_factory):
    return test_apps.run_native(gjs.argv, tmp_path_factory.mktemp(NAME))


def test_native_policy(gjs, shim, native_run, host_has_pku, tmp_path):
    if not host_has_pku:
        pytest.skip(test_apps.NO_PKU_REASON)
    stats = tmp_path / "stats.json"
    out = test_apps.run_native(argv_under_policy(gjs, shim, stats), tmp_path)
    test_apps.expect_same_output(gjs, native_run, out, "under the shim with spidermonkey.toml")
    expect_one_code_area(gjs, stats.read_text() if stats.exists() else None, "native run")


def test_simulated_policy(gjs, shim, native_run, tmp_path):
    stats = tmp_path / "stats.json"
    env = test_apps.clean_env()
    env["MPK_SIMULATE"] = "1"
    out = test_apps.run_native(argv_under_policy(gjs, shim, stats), tmp_path, env=env)
    test_apps.expect_same_output(gjs, native_run, out, "under the shim with spidermonkey.toml, simulated keys")
    text = stats.read_text() if stats.exists() else None
    assert text is None or json.loads(text).get("backend") == "simulated", text
    expect_one_code_area(gjs, text, "simulated keys")


@pytest.fixture(scope="session")
def guest_results(gjs, shim, intruder, host_has_pku, tmp_path_factory):
    if host_has_pku:
        pytest.skip("the host CPU has PKU: the native tests check the policy already")
    work = tmp_path_factory.mktemp(NAME + "_guest")
    stats = f"/tmp/{NAME}.stats.json"
    runs = [guest_runs.GuestRun(f"{NAME}.native", gjs.argv),
            guest_runs.GuestRun(f"{NAME}.policy", (guest_runs.BASH,) + argv_under_policy(gjs, shim, stats),
                                fetch=stats)]
    runs += test_apps.code_intruder_runs(NAME, intruder, lambda stats: argv_under_policy(gjs, shim, stats))
    return test_apps.guest_runs_or_fail(runs, [shim, intruder, POLICY, *gjs.files], work, gjs.copies, timeout=480)


def test_guest_policy(gjs, guest_results):
    native, policy = guest_results[f"{NAME}.native"], guest_results[f"{NAME}.policy"]
    test_apps.expect_same_output(gjs, (native.status, native.output), (policy.status, policy.output),
                                 "under the shim with spidermonkey.toml (QEMU guest with PKU)")
    expect_one_code_area(gjs, policy.fetched, "QEMU guest with PKU")


def test_guest_policy_stops_another_thread_writing_code(gjs, guest_results):
    test_apps.expect_code_intruder(gjs, "spidermonkey-code", guest_results, NAME)

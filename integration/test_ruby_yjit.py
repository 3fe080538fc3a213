"""Ruby 3.1's YJIT under libmpk_shim.so: one code area protected whole and in parts.

YJIT maps one 256 MiB code area and, thousands of times, mprotects one page of it read/write,
writes machine code there, then mprotects each 128 MiB half of the area read/exec again
(integration/workloads/ruby_yjit_compile.rb says how). The whole area and then each half become
page groups; a page opened inside a half is a page-level exception, never a reason to dissolve
the group: a keyed one (the page on a key of its own, one system call to tag it, then PKRU
writes for the page and for the half, which sets it too) for the last few pages opened:

  - the deterministic output line is the same natively and under the shim;
  - every mprotect call is served as a PKRU update or as a page-level exception (>= 95%:
    nothing is dissolved and passed through call after call); about half of YJIT's calls
    open a page, and with keyed exceptions almost all calls, those included, are PKRU updates
    (at least 90%);
  - the statistics count no more promotions than the ranges the workload protects whole
    (app_workloads.GROUP_RANGES: here the area and its two halves, 3), so a part that cuts
    a group never has a group made of it again and again.

With config/examples/ruby-yjit.toml (mprotect = "thread") the code area is instead one isolated
group whose toggles change only the calling thread's right (libmpk's semantics for a JIT's code
cache): the output is the same, >= 95% of the calls are emulated without any system call (no
page-level exceptions), and in enforce mode no violation is ever reported, i.e. YJIT writes code
only from a thread that made the area writable itself.

Where these run follows test_apps.py: natively on a CPU with PKU, otherwise in one boot of
a QEMU guest whose emulated CPU has PKU. The same checks also run natively on simulated keys
(MPK_SIMULATE=1, any CPU): the engine then decides exactly as on real keys (groups,
promotions, emulation) but protects nothing, so these runs check the engine's decisions and
the program's output, not protection.
"""

import json
import os

import pytest

import guest_runs
import test_apps

NAME = "ruby_yjit"


def expect_one_group_per_area(workload, stats_text, where):
    assert stats_text is not None, f"{workload.name}: the shim wrote no MPK_STATS file ({where})"
    stats = json.loads(stats_text)
    for key in ("promotions", "dissolves", "mprotect_calls", "mprotect_emulated", "exceptions"):
        assert key in stats, f"{workload.name}: stats lack {key} ({where})"
    assert stats["promotions"] <= workload.code_areas, (
        f"{workload.name}: {stats['promotions']} promotions ({stats['dissolves']} dissolves) for"
        f" {workload.code_areas} range(s) protected whole over {stats['mprotect_calls']} mprotect"
        f" calls ({where}): a range that covers part of a group must not dissolve it; stats: {stats}")


def expect_served(workload, stats_text, where):
    """Every call a PKRU update or a page-level exception, and enough calls seen."""
    assert stats_text is not None, f"{workload.name}: the shim wrote no MPK_STATS file ({where})"
    stats = json.loads(stats_text)
    calls = stats["mprotect_calls"]
    assert calls >= workload.min_mprotect, (
        f"{workload.name}: the shim saw {calls} mprotect calls, but the program makes at least"
        f" {workload.min_mprotect}: its calls bypass the shim ({where})")
    served = stats["mprotect_emulated"] + stats["exceptions"]
    assert served / calls >= test_apps.MIN_EMULATED_SHARE, (
        f"{workload.name}: {stats['mprotect_emulated']} emulated and {stats['exceptions']} page-level"
        f" exceptions of {calls} calls ({served / calls:.1%}) ({where}); stats: {stats}")
    assert stats["mprotect_emulated"] >= 0.9 * calls, (
        f"{workload.name}: {stats['mprotect_emulated']} of {calls} calls were PKRU updates, fewer than 90%:"
        f" the pages YJIT opens should be keyed exceptions ({where}); stats: {stats}")
    assert stats["violations"] == 0, f"{workload.name}: violations without a policy: {stats}"


JIT_POLICY = os.path.join(test_apps.REPO, "config", "examples", "ruby-yjit.toml")


def expect_thread_toggles(workload, stats_text, where):
    """The JIT policy: the area is one isolated group, every call on it a PKRU write."""
    assert stats_text is not None, f"{workload.name}: the shim wrote no MPK_STATS file ({where})"
    stats = json.loads(stats_text)
    calls = stats["mprotect_calls"]
    assert calls >= workload.min_mprotect, (
        f"{workload.name}: the shim saw {calls} mprotect calls, fewer than the program makes ({where})")
    regions = [r for r in stats["regions"] if r["name"] == "yjit-code"]
    assert len(regions) == 1 and regions[0]["kind"] == "isolate-thread", (
        f"{workload.name}: the code area is not the policy's region ({where}): {stats['regions']}")
    assert stats["mprotect_emulated"] / calls >= test_apps.MIN_EMULATED_SHARE, (
        f"{workload.name}: {stats['mprotect_emulated']} of {calls} calls emulated ({where}): {stats}")
    assert stats["exceptions"] == 0 and stats["dissolves"] == 0, (
        f"{workload.name}: a toggle went to the kernel ({where}): {stats}")
    assert stats["violations"] == 0, f"{workload.name}: code written without a write right ({where}): {stats}"


def jit_argv(workload, shim, stats):
    return (test_apps.MPK_RUN, "--shim", shim, "--config", JIT_POLICY, "--stats", str(stats), "--") + workload.argv


@pytest.fixture(scope="session")
def ruby(workloads):
    return workloads[NAME]


# ---------------------------------------------------------------------------------------
# Native runs (emulation is checked only where the CPU has PKU)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def native_runs(ruby, shim, tmp_path_factory):
    work = tmp_path_factory.mktemp(NAME)
    stats = work / "stats.json"
    native = test_apps.run_native(ruby.argv, work)
    shimmed = test_apps.run_native((test_apps.MPK_RUN, "--shim", shim, "--stats", str(stats), "--")
                                   + ruby.argv, work)
    return native, shimmed, stats.read_text() if stats.exists() else None


def test_native_same_output(ruby, native_runs):
    native, shimmed, _ = native_runs
    test_apps.expect_same_output(ruby, native, shimmed, "under the shim")


def test_native_emulation(ruby, native_runs, host_has_pku):
    if not host_has_pku:
        pytest.skip(test_apps.NO_PKU_REASON)
    expect_served(ruby, native_runs[2], "native run")


def test_native_one_group_per_area(ruby, native_runs, host_has_pku):
    if not host_has_pku:
        pytest.skip(test_apps.NO_PKU_REASON)
    expect_one_group_per_area(ruby, native_runs[2], "native run")


@pytest.fixture(scope="session")
def native_jit_run(ruby, shim, tmp_path_factory):
    work = tmp_path_factory.mktemp(NAME + "_jit")
    stats = work / "stats.json"
    out = test_apps.run_native(jit_argv(ruby, shim, stats), work)
    return out, stats.read_text() if stats.exists() else None


def test_native_jit_policy(ruby, native_runs, native_jit_run, host_has_pku):
    if not host_has_pku:
        pytest.skip(test_apps.NO_PKU_REASON)
    test_apps.expect_same_output(ruby, native_runs[0], native_jit_run[0], "under the shim with ruby-yjit.toml")
    expect_thread_toggles(ruby, native_jit_run[1], "native run, ruby-yjit.toml")


def test_noprotect_same_output(ruby, noprotect, native_runs, tmp_path):
    """The benchmark's ceiling preload must not change what the program computes."""
    env = test_apps.clean_env()
    env["LD_PRELOAD"] = noprotect
    other = test_apps.run_native(ruby.argv, tmp_path, env=env)
    test_apps.expect_same_output(ruby, native_runs[0], other, "under libmpk_noprotect.so")


# ---------------------------------------------------------------------------------------
# Simulated keys (MPK_SIMULATE=1): the engine's decisions on any CPU
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def simulated_run(ruby, shim, tmp_path_factory):
    work = tmp_path_factory.mktemp(NAME + "_sim")
    stats = work / "stats.json"
    env = test_apps.clean_env()
    env["MPK_SIMULATE"] = "1"
    out = test_apps.run_native((test_apps.MPK_RUN, "--shim", shim, "--stats", str(stats), "--")
                               + ruby.argv, work, env=env)
    return out, stats.read_text() if stats.exists() else None


def test_simulated_same_output(ruby, native_runs, simulated_run):
    test_apps.expect_same_output(ruby, native_runs[0], simulated_run[0],
                                 "under the shim on simulated keys")


def test_simulated_emulation(ruby, simulated_run):
    stats = simulated_run[1]
    assert stats is None or json.loads(stats).get("backend") == "simulated", stats
    expect_served(ruby, stats, "simulated keys")


def test_simulated_one_group_per_area(ruby, simulated_run):
    expect_one_group_per_area(ruby, simulated_run[1], "simulated keys")


def test_simulated_jit_policy(ruby, shim, native_runs, tmp_path):
    stats = tmp_path / "stats.json"
    env = test_apps.clean_env()
    env["MPK_SIMULATE"] = "1"
    out = test_apps.run_native(jit_argv(ruby, shim, stats), tmp_path, env=env)
    test_apps.expect_same_output(ruby, native_runs[0], out, "under the shim with ruby-yjit.toml, simulated keys")
    expect_thread_toggles(ruby, stats.read_text() if stats.exists() else None, "simulated keys, ruby-yjit.toml")


# ---------------------------------------------------------------------------------------
# The same in a QEMU guest with an emulated CPU that has PKU (only where the host lacks it)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def guest_results(ruby, shim, intruder, host_has_pku, tmp_path_factory):
    if host_has_pku:
        pytest.skip("the host CPU has PKU: the native tests check emulation already")
    work = tmp_path_factory.mktemp(NAME + "_guest")
    stats = f"/tmp/{NAME}.stats.json"
    jit_stats = f"/tmp/{NAME}.jit.stats.json"
    runs = [guest_runs.GuestRun(f"{NAME}.native", ruby.argv),
            guest_runs.GuestRun(f"{NAME}.shim", guest_runs.under_shim(ruby.argv, shim, stats),
                                fetch=stats),
            guest_runs.GuestRun(f"{NAME}.jit", (guest_runs.BASH,) + jit_argv(ruby, shim, jit_stats),
                                fetch=jit_stats)]
    runs += test_apps.code_intruder_runs(NAME, intruder, lambda stats: jit_argv(ruby, shim, stats))
    return test_apps.guest_runs_or_fail(runs, [shim, intruder, JIT_POLICY, *ruby.files], work, ruby.copies,
                                        timeout=480)


def test_guest_same_output(ruby, guest_results):
    native, shimmed = guest_results[f"{NAME}.native"], guest_results[f"{NAME}.shim"]
    test_apps.expect_same_output(ruby, (native.status, native.output),
                                 (shimmed.status, shimmed.output),
                                 "under the shim (QEMU guest with PKU)")


def test_guest_emulation(ruby, guest_results):
    expect_served(ruby, guest_results[f"{NAME}.shim"].fetched, "QEMU guest with PKU")


def test_guest_one_group_per_area(ruby, guest_results):
    expect_one_group_per_area(ruby, guest_results[f"{NAME}.shim"].fetched, "QEMU guest with PKU")


def test_guest_jit_policy(ruby, guest_results):
    native, jit = guest_results[f"{NAME}.native"], guest_results[f"{NAME}.jit"]
    test_apps.expect_same_output(ruby, (native.status, native.output), (jit.status, jit.output),
                                 "under the shim with ruby-yjit.toml (QEMU guest with PKU)")
    expect_thread_toggles(ruby, jit.fetched, "QEMU guest with PKU, ruby-yjit.toml")


def test_guest_jit_policy_stops_another_thread_writing_code(ruby, guest_results):
    test_apps.expect_code_intruder(ruby, "yjit-code", guest_results, NAME)

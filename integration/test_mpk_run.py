"""scripts/mpk-run: the environment it gives the program, its errors and its exit status."""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPK_RUN = os.path.join(REPO, "scripts", "mpk-run")
SHOW_ENV = 'printf "%s|%s|%s|%s\\n" "$LD_PRELOAD" "${MPK_CONFIG-unset}" "${MPK_STATS-unset}" "${MPK_MODE-unset}"'


def mpk_run(*args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MPK_")}
    env.update(env_extra or {})
    return subprocess.run([MPK_RUN, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=60)


def test_sets_the_environment(shim, tmp_path):
    config = tmp_path / "policy.toml"
    config.write_text("# empty policy\n")
    r = mpk_run("--shim", shim, "--config", str(config), "--stats", "s.json", "--audit", "--",
                "sh", "-c", SHOW_ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{shim}|{config}|{tmp_path}/s.json|audit"


def test_leaves_unset_what_is_not_asked_for(shim):
    r = mpk_run("--shim", shim, "sh", "-c", SHOW_ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{shim}|unset|unset|unset"


def test_prepends_the_shim_to_ld_preload(shim, noprotect):
    r = mpk_run("--shim", shim, "--", "sh", "-c", 'echo "$LD_PRELOAD"',
                env_extra={"LD_PRELOAD": noprotect})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{shim}:{noprotect}"


def test_finds_the_shim_through_mpk_shim(shim):
    r = mpk_run("sh", "-c", 'echo "$LD_PRELOAD"', env_extra={"MPK_SHIM": shim})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == shim


@pytest.mark.parametrize("status", [0, 3, 42])
def test_exit_status_is_the_commands(shim, status):
    assert mpk_run("--shim", shim, "--", "sh", "-c", f"exit {status}").returncode == status


def test_a_command_that_cannot_run(shim):
    r = mpk_run("--shim", shim, "--", "/nonexistent/program")
    assert r.returncode == 127


@pytest.mark.parametrize("args, message", [
    ((), "no command given"),
    (("--config", "/nonexistent/policy.toml", "true"), "config file '/nonexistent/policy.toml'"),
    (("--stats", "/nonexistent/dir/s.json", "true"), "folder for the stats file"),
    (("--bogus", "true"), "unknown option '--bogus'"),
    (("--stats",), "needs a value"),
])
def test_usage_errors(shim, args, message):
    r = mpk_run("--shim", shim, *args)
    assert r.returncode == 2
    assert message in r.stderr


def test_missing_shim_is_an_error():
    r = mpk_run("true", env_extra={"MPK_SHIM": "/nonexistent/libmpk_shim.so"})
    assert r.returncode == 2
    assert "/nonexistent/libmpk_shim.so" in r.stderr and "not a file" in r.stderr


def test_help():
    r = mpk_run("--help")
    assert r.returncode == 0
    assert r.stdout.startswith("Usage: mpk-run")

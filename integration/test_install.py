"""The tool installed: `cmake --install` into a fresh prefix and the Debian package (cpack -G DEB).

  - the tools land in <prefix>/bin (mpk-run, mpk-learn, mpk-stat, mpk-policy-check), the
    libraries in <prefix>/lib*, <mpk.h> in <prefix>/include and every annotated policy of
    config/examples in <prefix>/share/libmpk/policies, each of which the installed
    mpk-policy-check accepts;
  - the installed mpk-run and mpk-learn preload the installed shim (not the build folder's), with
    no --shim and no MPK_SHIM;
  - the .deb is named libmpk-shim, installs under /usr, says what it depends on, and once
    unpacked runs the same way.
"""

import glob
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("mpk-run", "mpk-learn", "mpk-stat", "mpk-policy-check")
POLICIES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "config", "examples", "*.toml")))


def run(argv, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("MPK_SHIM", "MPK_CONFIG", "LD_PRELOAD")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, **kw)


@pytest.fixture(scope="module")
def build(pytestconfig):
    return os.path.realpath(pytestconfig.getoption("mpk_build"))


@pytest.fixture(scope="module")
def prefix(build, tmp_path_factory):
    p = tmp_path_factory.mktemp("prefix")
    r = run(["cmake", "--install", build, "--prefix", str(p)])
    assert r.returncode == 0, r.stdout + r.stderr
    return str(p)


def preloaded_by(mpk_run):
    """What LD_PRELOAD the installed mpk-run gives a command."""
    r = run([mpk_run, "--", "/bin/sh", "-c", 'echo "$LD_PRELOAD"'])
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def test_layout(prefix):
    for tool in TOOLS:
        path = os.path.join(prefix, "bin", tool)
        assert os.path.isfile(path) and os.access(path, os.X_OK), f"{tool} is not installed in {prefix}/bin"
    for lib in ("libmpk_shim.so", "libmpk.so"):
        assert glob.glob(os.path.join(prefix, "lib*", "**", lib), recursive=True), f"{lib} not installed"
    assert os.path.isfile(os.path.join(prefix, "include", "mpk.h"))
    installed = sorted(os.listdir(os.path.join(prefix, "share", "libmpk", "policies")))
    assert installed == POLICIES


def test_installed_policies_are_valid(prefix):
    check = os.path.join(prefix, "bin", "mpk-policy-check")
    for name in POLICIES:
        r = run([check, os.path.join(prefix, "share", "libmpk", "policies", name)])
        assert r.returncode == 0 and "valid policy" in r.stdout, f"{name}: {r.stdout}{r.stderr}"


def test_installed_mpk_run_preloads_the_installed_shim(prefix):
    shim = preloaded_by(os.path.join(prefix, "bin", "mpk-run"))
    assert shim.startswith(os.path.realpath(prefix) + "/") and shim.endswith("/libmpk_shim.so"), shim


def test_installed_mpk_learn_finds_the_installed_shim(prefix, tmp_path):
    # A learning run of `true` under a base policy: it must get as far as running the command
    # with the installed shim (the policy it writes has no thread to learn).
    base = os.path.join(prefix, "share", "libmpk", "policies", "isolate.toml")
    out = tmp_path / "learned.toml"
    r = run([os.path.join(prefix, "bin", "mpk-learn"), str(out), "--policy", base, "--", "/bin/true"], cwd=tmp_path)
    assert "libmpk_shim.so not found" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr


def test_debian_package(build, tmp_path):
    if shutil.which("dpkg-deb") is None:
        pytest.fail("dpkg-deb is missing (package dpkg): the .deb cannot be checked")
    r = run(["cpack", "-G", "DEB", "--config", os.path.join(build, "CPackConfig.cmake"), "-B", str(tmp_path)],
            cwd=build)
    assert r.returncode == 0, r.stdout + r.stderr
    debs = glob.glob(os.path.join(tmp_path, "*.deb"))
    assert len(debs) == 1, os.listdir(tmp_path)
    deb = debs[0]
    fields = run(["dpkg-deb", "-f", deb, "Package", "Architecture", "Depends"]).stdout
    assert "Package: libmpk-shim" in fields and "Architecture: amd64" in fields, fields
    assert "libc6" in fields and "python3" in fields, fields
    listing = run(["dpkg-deb", "-c", deb]).stdout
    for path in ["./usr/bin/" + t for t in TOOLS] + ["./usr/share/libmpk/policies/" + p for p in POLICIES]:
        assert f" {path}\n" in listing + "\n", f"{path} is not in the package:\n{listing}"
    assert "/libmpk_shim.so" in listing and "./usr/include/mpk.h" in listing, listing
    root = tmp_path / "root"
    r = run(["dpkg-deb", "-x", deb, str(root)])
    assert r.returncode == 0, r.stderr
    shim = preloaded_by(os.path.join(root, "usr", "bin", "mpk-run"))
    assert shim.startswith(os.path.realpath(root) + "/usr/lib") and shim.endswith("/libmpk_shim.so"), shim

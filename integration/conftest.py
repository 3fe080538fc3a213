"""pytest options and shared fixtures for the application tests (test_apps.py).

Options (each also read from the environment variable in brackets):
  --mpk-build DIR       the build folder                     [MPK_BUILD]  default <repo>/build
  --mpk-shim PATH       libmpk_shim.so                        [MPK_SHIM]   default DIR/libmpk_shim.so
  --mpk-noprotect PATH  the no-protection preload (fixture)   [MPK_NOPROTECT]
                        default DIR/integration/libmpk_noprotect.so
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import app_workloads  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser):
    group = parser.getgroup("libmpk")
    group.addoption("--mpk-build", default=os.environ.get("MPK_BUILD", os.path.join(REPO, "build")),
                    help="build folder (default: $MPK_BUILD, else <repo>/build)")
    group.addoption("--mpk-shim", default=os.environ.get("MPK_SHIM", ""),
                    help="libmpk_shim.so (default: $MPK_SHIM, else BUILD/libmpk_shim.so)")
    group.addoption("--mpk-noprotect", default=os.environ.get("MPK_NOPROTECT", ""),
                    help="libmpk_noprotect.so (default: BUILD/integration/libmpk_noprotect.so)")


@pytest.fixture(scope="session")
def shim(pytestconfig):
    path = pytestconfig.getoption("mpk_shim") or os.path.join(
        pytestconfig.getoption("mpk_build"), "libmpk_shim.so")
    if not os.path.isfile(path):
        pytest.fail(f"shim not found at {path}: build the mpk_shim target or pass --mpk-shim")
    return os.path.realpath(path)


@pytest.fixture(scope="session")
def noprotect(pytestconfig):
    path = pytestconfig.getoption("mpk_noprotect") or os.path.join(
        pytestconfig.getoption("mpk_build"), "integration", "libmpk_noprotect.so")
    if not os.path.isfile(path):
        pytest.fail(f"no-protection preload not found at {path}: build the mpk_noprotect target"
                    " or pass --mpk-noprotect")
    return os.path.realpath(path)


@pytest.fixture(scope="session")
def intruder(pytestconfig):
    """libmpk_intruder.so (tests/fixtures/intruder): with INTRUDER_CODE=1, a thread that writes a
    JIT's code area."""
    path = os.path.join(pytestconfig.getoption("mpk_build"), "integration", "memcached", "libmpk_intruder.so")
    if not os.path.isfile(path):
        pytest.fail(f"{path} not found: build the mpk_intruder target")
    return os.path.realpath(path)


@pytest.fixture(scope="session")
def workloads():
    missing = app_workloads.missing_programs()
    if missing:
        pytest.fail("programs missing: " + ", ".join(missing) +
                    " (scripts/setup installs luajit sysbench php8.2-cli php8.2-opcache ruby3.1)")
    return {w.name: w for w in app_workloads.workloads("test")}


@pytest.fixture(scope="session")
def host_has_pku():
    return app_workloads.host_has_pku()

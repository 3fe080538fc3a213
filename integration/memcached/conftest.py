"""pytest options and fixtures for the memcached tests (test_native.py, test_guest.py).

Options (each also read from the environment variable in brackets; defaults under <repo>/build):
  --mc-shim PATH          libmpk_shim.so                      [MPK_SHIM]
  --mc-policy-check PATH  mpk-policy-check                    [MPK_POLICY_CHECK]
  --mc-load PATH          mpk_mc_load (the checking client)   [MPK_MC_LOAD]
  --mc-intruder PATH      libmpk_intruder.so                  [MPK_INTRUDER]
"""

import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(REPO, "build")

OPTIONS = {
    "mc_shim": ("MPK_SHIM", os.path.join(BUILD, "libmpk_shim.so"), "mpk_shim"),
    "mc_policy_check": ("MPK_POLICY_CHECK", os.path.join(BUILD, "mpk-policy-check"), "mpk-policy-check"),
    "mc_load": ("MPK_MC_LOAD", os.path.join(BUILD, "integration", "memcached", "mpk_mc_load"), "mpk_mc_load"),
    "mc_intruder": ("MPK_INTRUDER", os.path.join(BUILD, "integration", "memcached", "libmpk_intruder.so"),
                    "mpk_intruder"),
}


def pytest_addoption(parser):
    group = parser.getgroup("memcached")
    for name, (env, default, target) in OPTIONS.items():
        group.addoption("--" + name.replace("_", "-"), default=os.environ.get(env, default),
                        help=f"the {target} build output (default: ${env}, else {default})")


def _built(pytestconfig, name):
    path = pytestconfig.getoption(name)
    if not os.path.isfile(path):
        pytest.fail(f"{path} not found: build the {OPTIONS[name][2]} target or pass --{name.replace('_', '-')}")
    return os.path.realpath(path)


@pytest.fixture(scope="session")
def tools(pytestconfig):
    for prog in ("memcached", "memccapable", "memcslap"):
        if not shutil.which(prog, path="/usr/bin:/bin:" + os.environ.get("PATH", "")):
            pytest.fail(f"{prog} not found: install the Debian packages memcached and libmemcached-tools")
    return {name: _built(pytestconfig, name) for name in OPTIONS}

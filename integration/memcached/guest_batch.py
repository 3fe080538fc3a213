"""Run several memcached checks on a CPU with protection keys: natively when this CPU has PKU,
else in one boot of the QEMU guest (scripts/qemu-run), whose emulated CPU has it.

Each check is a (busybox-compatible) shell snippet; its exit status and output come back on the
console between marker lines that carry a per-run nonce, and files it names are printed there
too. The guest has no network device, but its loopback works once it is up: memcached and its
clients (memccapable, memcslap, mpk_mc_load) all run inside.
"""

import os
import re
import secrets
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
QEMU_RUN = os.path.join(REPO, "scripts", "qemu-run")
sys.path.insert(0, os.path.dirname(HERE))  # integration/: the console reader it shares
from guest_runs import console_of  # noqa: E402
LIBDIR = "/usr/lib/x86_64-linux-gnu"
# The shim dlopens libunwind (backtraces, caller criteria); ldd does not list it.
UNWIND = [os.path.join(LIBDIR, "libunwind.so.8"), os.path.join(LIBDIR, "liblzma.so.5")]

PRELUDE = f"""\
# memcached refuses to run as root without a user it can look up; the guest has no /etc/passwd.
echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd; echo 'root:x:0:' > /etc/group
# qemu-run copies a library to its real path (libunwind.so.8.0.1): give dlopen its soname too.
for l in {' '.join(UNWIND)}; do
  [ -e "$l" ] || ln -s "$(ls "$l".* | head -n1)" "$l"
done
ip link set lo up
"""


def host_has_pku():
    with open("/proc/cpuinfo") as f:
        return re.search(r"^flags\s*:.*\bpku\b", f.read(), re.M) is not None


def run(checks, files, workdir, timeout=400, echo=True, copies=()):
    """checks: [(label, shell snippet, [files to bring back])]; copies: folders or files the
    guest also needs as they are (qemu-run --copy). Returns
    {label: {"status": int, "output": str, "files": {path: text}}}."""
    native = host_has_pku()
    nonce = secrets.token_hex(6)
    lines = [] if native else [PRELUDE]
    for label, snippet, fetch in checks:
        tag = f"@@{nonce} {label}"
        lines += [f"echo '{tag} begin'", "(", snippet, ") > /tmp/check.out 2>&1 </dev/null",
                  f"echo \"{tag} status $?\"", f"echo '{tag} output'; cat /tmp/check.out; echo; echo '{tag} end'"]
        for path in fetch:
            q = shlex.quote(path)
            lines.append(f"if [ -f {q} ]; then echo '{tag} file {path}'; cat {q}; echo; echo '{tag} end'; fi")
    script = os.path.join(workdir, f"guest-{nonce}.sh")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    if native:
        try:
            r = subprocess.run(["sh", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace", timeout=timeout)
            status, log = r.returncode, r.stdout
        except subprocess.TimeoutExpired as e:
            out = e.stdout or ""
            status, log = "timeout", out.decode(errors="replace") if isinstance(out, bytes) else out
        if echo:
            sys.stdout.write(log)
    else:
        wanted = list(dict.fromkeys([*files, *UNWIND, script]))
        cmd = [QEMU_RUN, "--timeout", str(timeout), *wanted, *[a for c in copies for a in ("--copy", c)],
               "--", "sh", script]
        status, log = console_of(cmd, echo)
    results = {}
    for label, _, fetch in checks:
        tag = re.escape(f"@@{nonce} {label}")
        m = re.search(tag + r" status (\d+)\n" + tag + r" output\n(.*?)\n" + tag + r" end\n", log, re.S)
        if not m:
            where = "the native run" if native else "the guest"
            raise RuntimeError(f"{where} did not report '{label}' (exit {status}); console tail:\n" + log[-3000:])
        got = {}
        for path in fetch:
            f = re.search(tag + " file " + re.escape(path) + r"\n(.*?)\n" + tag + r" end\n", log, re.S)
            if f:
                got[path] = f.group(1)
        results[label] = {"status": int(m.group(1)), "output": m.group(2), "files": got}
    return results

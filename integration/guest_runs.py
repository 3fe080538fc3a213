"""Run many commands in one boot of the QEMU guest (scripts/qemu-run) and collect each one's
exit status, output and, optionally, a file it wrote (the shim's statistics).

The guest's only channel back is its console, so each run's output and file are printed
between marker lines that carry a per-boot nonce, and parsed out of the console log.
"""

import dataclasses
import os
import re
import secrets
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU_RUN = os.path.join(REPO, "scripts", "qemu-run")
MPK_RUN = os.path.join(REPO, "scripts", "mpk-run")
BASH = "/usr/bin/bash"   # scripts/mpk-run is a bash script; the guest has only busybox


def console_of(cmd, echo):
    """Runs a qemu-run command line; returns its exit status and the whole console log (echoed
    to stderr as it comes when `echo`). A skip (77: the host CPU has PKU) raises RuntimeError."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    console = []
    for line in proc.stdout:
        console.append(line)
        if echo:
            sys.stderr.write(line)
    status = proc.wait()
    if status == 77:
        raise RuntimeError("qemu-run skipped: the host CPU has PKU")
    return status, "".join(console)


@dataclasses.dataclass
class GuestRun:
    label: str
    argv: tuple
    fetch: str = ""      # a guest file to bring back after the run (e.g. MPK_STATS)


@dataclasses.dataclass
class GuestResult:
    status: int
    output: str          # stdout and stderr, interleaved
    fetched: str = None  # the fetched file's text; None when the run did not write it


def with_env(settings, argv):
    """argv run with extra environment settings ("K=V", ...) in the guest, whose shell is busybox."""
    return (BASH, "-c", " ".join(f"export {shlex.quote(x)};" for x in settings) + ' exec "$@"', "bash") + tuple(argv)


def under_shim(argv, shim, stats):
    """argv run through scripts/mpk-run in the guest."""
    return (BASH, MPK_RUN, "--shim", shim, "--stats", stats, "--") + tuple(argv)


def _script(runs, nonce):
    lines = ["# Generated: runs commands and prints their results between markers.",
             "out=/tmp/guest-run.out"]
    for r in runs:
        tag = f"@@{nonce} {r.label}"
        if r.fetch:
            lines.append(f"rm -f {shlex.quote(r.fetch)}")
        lines.append(f"echo 'guest: {r.label}' >&2")
        lines.append(" ".join(shlex.quote(a) for a in r.argv) + " >$out 2>&1 </dev/null")
        lines.append(f"echo \"{tag} status $?\"")
        lines.append(f"echo '{tag} output'; cat $out; echo; echo '{tag} end'")
        if r.fetch:
            lines.append(f"if [ -f {shlex.quote(r.fetch)} ]; then echo '{tag} file';"
                         f" cat {shlex.quote(r.fetch)}; echo; echo '{tag} end'; fi")
    return "\n".join(lines) + "\n"


def run(runs, files, workdir, copies=(), timeout=600, echo=False):
    """Boot the guest once, run `runs` in order, return {label: GuestResult}.

    files: host files the guest needs (programs, libraries, scripts); each is copied to the
    same path with its shared libraries; copies: host folders copied as they are. Raises RuntimeError when the guest could not run.
    """
    nonce = secrets.token_hex(6)
    script = os.path.join(workdir, f"guest-runs-{nonce}.sh")
    with open(script, "w") as f:
        f.write(_script(runs, nonce))
    wanted = []
    for path in [BASH, MPK_RUN, script, *files]:
        if path not in wanted:
            wanted.append(path)
    cmd = [QEMU_RUN, "--timeout", str(timeout)]
    for c in dict.fromkeys(copies):
        cmd += ["--copy", c]
    cmd += [*wanted, "--", "sh", script]
    status, log = console_of(cmd, echo)
    results = {}
    for r in runs:
        tag = re.escape(f"@@{nonce} {r.label}")
        m = re.search(tag + r" status (\d+)\n" + tag + r" output\n(.*?)\n" + tag + r" end\n", log, re.S)
        if not m:
            raise RuntimeError(f"the guest did not report run '{r.label}' (qemu-run exit {status});"
                               f" console tail:\n{log[-3000:]}")
        fetched = None
        f = re.search(tag + r" file\n(.*?)\n" + tag + r" end\n", log, re.S)
        if f:
            fetched = f.group(1)
        results[r.label] = GuestResult(int(m.group(1)), m.group(2), fetched)
    return results
